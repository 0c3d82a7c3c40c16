/* The floor under verify/1m_keys: the latency of one dependent random read in a 256 MiB
 * buffer (a pointer chase over a shuffled cycle of cache lines), with 4 KiB pages and with
 * transparent huge pages. Usage: bench/latency.sh */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

int main(int argc, char **argv) {
  const size_t bytes = (size_t)256 << 20, huge_page = (size_t)2 << 20;
  int huge = argc > 1 && atoi(argv[1]);
  char *raw = mmap(0, bytes + huge_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return 1;
  char *p = (char *)(((uintptr_t)raw + huge_page - 1) & ~(uintptr_t)(huge_page - 1));
  madvise(p, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  size_t lines = bytes / 64, *order = malloc(lines * sizeof *order);
  if (!order) return 1;
  for (size_t i = 0; i < lines; i++) order[i] = i;
  uint64_t s = 0x9E3779B97F4A7C15ull;
  for (size_t i = lines - 1; i > 0; i--) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    size_t j = s % (i + 1), t = order[i];
    order[i] = order[j]; order[j] = t;
  }
  for (size_t i = 0; i < lines; i++) *(size_t *)(p + order[i] * 64) = order[(i + 1) % lines] * 64;
  const int reads = 20000000;
  size_t at = order[0] * 64;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < reads; i++) at = *(size_t *)(p + at);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / reads;
  printf("%s pages: %.0f ns per dependent random read (%zu)\n", huge ? "2 MiB" : "4 KiB", ns, at & 1);
  return 0;
}
