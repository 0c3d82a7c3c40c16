//! `verify` and `record` on raw Node-API: the calls a server makes per request.
//!
//! napi-rs's generated glue for a class method costs microseconds per call (it unwraps and
//! type-checks `this`, converts every argument through owned `String`s and wraps the result in
//! a new class instance), which is an order of magnitude more than the decision itself. This
//! module binds one plain JS function per engine instead: the engine travels as the function's
//! data pointer, strings are read into stack buffers, and the decision crosses as numbers:
//!
//! - the return value is the decision's code as an integer (0 = allowed, `1 + index` in
//!   [`DenyCode::ALL`]), or, when the decision names a key this function has not reported
//!   before, an array `[code, keyId, storeId, environment]`. Each key identity reported gets
//!   a number (written to the out array), which the typed layer keeps its strings under: so
//!   the strings of a key are made once, however many keys take turns;
//! - the limit fields go into a `Float64Array` of [`OUT_LEN`] slots the typed layer owns and
//!   handed over at binding time (see [`Slot`]).
//!
//! Everything else about the decision (names, statuses, messages, refusal bodies) is asked of
//! the core by the typed layer from those numbers; no rule is restated in JS.
//!
//! `record` is bound the same way and takes the decision's store, key and code number back
//! with the request's method, path, status, latency and address, as strings read into stack
//! buffers.
//!
//! This is the crate's only `unsafe` code. Invariants: a function's data pointer is a
//! `Box<Verifier>` (`verify`) or `Box<Shared>` (`record`) leaked at creation and freed only by
//! the function's finalizer; the `Float64Array` is kept alive by a strong reference owned by
//! the verifier, so the data pointer read at binding time stays valid (V8 never moves an
//! off-heap backing store, and the array is never handed out to be detached); a function is
//! only ever called on the thread of the environment that created it, so the box's `RefCell`
//! (and the `Rc` of `Shared`) is never shared across threads.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_void};
use std::mem::MaybeUninit;
use std::num::NonZeroU64;
use std::ptr;

use latchkey::{DenyCode, Permission, VerifyRequest};
use napi::sys;
use napi::sys::{Status, TypedarrayType, ValueType};

use crate::Shared;

/// Slots of the out array, as the typed layer reads them.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
enum Slot {
    /// The governing limit, or -1 when none applied (then the next three are meaningless).
    Limit,
    Remaining,
    /// Unix seconds.
    Reset,
    /// Whole seconds ≥ 1 on `RATE_LIMITED`, else 0.
    RetryAfter,
    /// [`Permission::index`] of the permission a `FORBIDDEN` lacked, else -1.
    Missing,
    /// The number of the key identity the decision names (see [`Identities`]), else -1.
    Key,
}

/// Length of the out array.
pub(crate) const OUT_LEN: usize = 6;

/// Credentials, addresses and paths up to this many bytes are read without allocating.
const STACK_STRING: usize = 256;

struct Verifier {
    engine: Shared,
    out: *mut f64,
    out_ref: sys::napi_ref,
    identities: RefCell<Identities>,
}

/// Key identities (key id, store, environment) reported to the typed layer, by number: the
/// number is a slot of a direct-mapped table of [`latchkey::KeyIdentity::serial`]s, one word
/// each.
///
/// A slot holds the serial of the identity last reported under its number, and serials are
/// never shared by two identities, so a serial found in its slot means the typed layer already
/// has that identity's strings under the number; anything else (a serial new to the slot, or
/// none) sends the strings and takes the slot over. Keys whose serials share a slot only cost
/// a resend when they alternate. Hot keys are looked up in the few cache lines their serials
/// fill (keys made together have consecutive serials), not in a table of 64-byte identities.
struct Identities {
    slots: Box<[u64]>,
}

impl Default for Identities {
    fn default() -> Self {
        // Zeroed pages from the allocator: only the slots in use are ever touched.
        Self {
            slots: vec![0; Self::CAP].into_boxed_slice(),
        }
    }
}

/// How many numbers identities get (the typed layer sizes its table by it).
pub(crate) const KEY_SLOTS: u32 = 1 << 16;

impl Identities {
    const CAP: usize = KEY_SLOTS as usize;

    /// The number for the identity with this serial (see [`latchkey::KeyIdentity::serial`]),
    /// and whether it is new (so its strings must be sent).
    fn number(&mut self, serial: Option<NonZeroU64>) -> (u32, bool) {
        let Some(serial) = serial else {
            // Unnumbered (serials ran out): always sent, under slot 0, which then holds a value
            // no serial has, so the next serial of that slot is sent again too.
            self.slots[0] = 0;
            return (0, true);
        };
        let serial = serial.get();
        // Below CAP (2^16), so it fits a u32 and indexes `slots`.
        #[allow(clippy::cast_possible_truncation)]
        let slot = (serial as usize) & (Self::CAP - 1);
        let new = self.slots[slot] != serial;
        self.slots[slot] = serial;
        (slot as u32, new)
    }
}

/// Why arguments were refused, as the typed layer's `LatchkeyError` reads it.
fn throw(env: sys::napi_env, code: &str, problems: &[String]) {
    let message = if code == "VALIDATION" {
        "Validation failed"
    } else {
        problems.first().map_or("error", String::as_str)
    };
    let body = serde_json::json!({"code": code, "message": message, "problems": problems});
    let text = format!("{}{body}", crate::ERROR_MARK).replace('\0', "");
    let text = std::ffi::CString::new(text).unwrap_or_default();
    // SAFETY: env is the live environment of this call; text is NUL-terminated.
    unsafe {
        sys::napi_throw_error(env, ptr::null(), text.as_ptr());
    }
}

/// A string argument: `Ok(None)` for undefined or null, `Err` for anything else that is not a
/// string. Short ASCII strings land in `buf`; anything else in `heap`.
///
/// Read as UTF-16 code units, which V8 copies straight out of its one-byte and two-byte
/// strings alike (`napi_get_value_string_utf8` transcodes and measures, and costs several
/// times more for the ASCII credentials, addresses and paths verify sees). The units are
/// narrowed only when every one is ASCII; otherwise the string is decoded losslessly.
///
/// SAFETY: `env` and `value` belong to the current call.
unsafe fn read_string<'b>(
    env: sys::napi_env,
    value: sys::napi_value,
    buf: &'b mut [MaybeUninit<u8>; STACK_STRING],
    heap: &'b mut String,
) -> Result<Option<&'b str>, ()> {
    // Not zeroed: Node-API writes the first `len` units, and only those are read.
    let mut units = [MaybeUninit::<u16>::uninit(); STACK_STRING];
    let mut len = 0usize;
    let status = unsafe {
        sys::napi_get_value_string_utf16(
            env,
            value,
            units.as_mut_ptr().cast::<u16>(),
            STACK_STRING,
            &mut len,
        )
    };
    if status != Status::napi_ok {
        let mut kind = 0;
        let status = unsafe { sys::napi_typeof(env, value, &mut kind) };
        return if status == Status::napi_ok
            && (kind == ValueType::napi_undefined || kind == ValueType::napi_null)
        {
            Ok(None)
        } else {
            Err(())
        };
    }
    if len < STACK_STRING - 1 {
        // SAFETY: Node-API initialised the first `len` units (len < STACK_STRING).
        let units = unsafe { std::slice::from_raw_parts(units.as_ptr().cast::<u16>(), len) };
        // One pass that narrows and notes the highest bit seen: whole blocks of 16 units with
        // vector loads, the rest unit by unit. V8 copies a string's last units one by one, and
        // a wider load of units stored that way moments ago cannot take them from the store
        // buffer: it waits for the stores to land, which cost more than the rest of the read.
        let mut seen = 0u16;
        let whole = len & !15;
        for (bytes, block) in buf[..whole]
            .chunks_exact_mut(16)
            .zip(units[..whole].chunks_exact(16))
        {
            for (byte, &unit) in bytes.iter_mut().zip(block) {
                seen |= unit;
                // Kept only when every unit is below 0x80 (checked next).
                #[allow(clippy::cast_possible_truncation)]
                byte.write(unit as u8);
            }
        }
        for (byte, &unit) in buf[whole..len].iter_mut().zip(&units[whole..]) {
            seen |= unit;
            #[allow(clippy::cast_possible_truncation)]
            byte.write(unit as u8);
        }
        if seen < 0x80 {
            // SAFETY: the first `len` bytes were written just above, and all are ASCII
            // (UTF-8).
            let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) };
            return Ok(Some(unsafe { std::str::from_utf8_unchecked(bytes) }));
        }
    }
    // Long (possibly cut short above) or not ASCII: read the whole string and decode it.
    let mut full = 0usize;
    if unsafe { sys::napi_get_value_string_utf16(env, value, ptr::null_mut(), 0, &mut full) }
        != Status::napi_ok
    {
        return Err(());
    }
    let mut all = vec![0u16; full + 1];
    if unsafe { sys::napi_get_value_string_utf16(env, value, all.as_mut_ptr(), full + 1, &mut len) }
        != Status::napi_ok
    {
        return Err(());
    }
    // Lone surrogates become U+FFFD, as Node-API's own UTF-8 conversion does.
    *heap = String::from_utf16_lossy(&all[..len]);
    Ok(Some(heap.as_str()))
}

/// This call's arguments (up to `N`; missing ones are undefined), how many were given, and
/// the function's data pointer; `None` (an error thrown) when Node-API cannot say or no data
/// is bound.
///
/// SAFETY: `env` and `info` belong to the current call.
unsafe fn arguments<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    function: &str,
) -> Option<(usize, [sys::napi_value; N], *mut c_void)> {
    let mut argc = N;
    let mut argv = [ptr::null_mut(); N];
    let mut data: *mut c_void = ptr::null_mut();
    // SAFETY: argv has room for argc values; missing arguments are filled with undefined.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            &mut data,
        )
    };
    if status != Status::napi_ok || data.is_null() {
        throw(env, "INTERNAL", &[format!("{function}: no engine bound")]);
        return None;
    }
    Some((argc, argv, data))
}

/// A JS function `name` calling `callback` with `data`, which `finalize` frees once the
/// function is collected; `None` when it cannot be made, `data` then freed already.
///
/// SAFETY: `env` is the live environment; `data` is a leaked box that `finalize` frees and
/// `callback` reads, per the module's invariants.
unsafe fn function(
    env: sys::napi_env,
    name: &CStr,
    callback: sys::napi_callback,
    data: *mut c_void,
    finalize: unsafe extern "C" fn(sys::napi_env, *mut c_void, *mut c_void),
) -> Option<sys::napi_value> {
    let mut function = ptr::null_mut();
    // SAFETY: as the function's own contract.
    unsafe {
        if sys::napi_create_function(
            env,
            name.as_ptr(),
            CStr::count_bytes(name) as isize,
            callback,
            data,
            &mut function,
        ) != Status::napi_ok
            || sys::napi_add_finalizer(
                env,
                function,
                data,
                Some(finalize),
                ptr::null_mut(),
                ptr::null_mut(),
            ) != Status::napi_ok
        {
            finalize(env, data, ptr::null_mut());
            return None;
        }
    }
    Some(function)
}

/// `verify(credential, permissionIndex, path[, ip])`; see the module documentation. The address
/// is last so an in-process caller, which has none, leaves it out: an absent argument is known
/// from the count, where an `undefined` one costs a failed read and a type test.
unsafe extern "C" fn verify(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: env and info are this call's.
    let Some((argc, argv, data)) = (unsafe { arguments::<4>(env, info, "verify") }) else {
        return ptr::null_mut();
    };
    // SAFETY: data is the Box<Verifier> leaked in `bind`, alive until the function's finalizer.
    let verifier = unsafe { &*data.cast::<Verifier>() };

    let mut problems = Vec::new();
    let (mut credential_buf, mut credential_heap) =
        ([MaybeUninit::<u8>::uninit(); STACK_STRING], String::new());
    // SAFETY (this and the reads below): the values are this call's arguments.
    let credential =
        unsafe { read_string(env, argv[0], &mut credential_buf, &mut credential_heap) }
            .unwrap_or_else(|()| {
                problems.push("credential: expected a string".to_owned());
                None
            });
    let mut index = -1i32;
    // Read first and asked its type only when it is not a number: `napi_typeof` tests the
    // kinds one by one, which costs more than the read.
    let permission =
        if unsafe { sys::napi_get_value_int32(env, argv[1], &mut index) } == Status::napi_ok {
            match u32::try_from(index) {
                Ok(i) => Permission::from_index(i).or_else(|| {
                    problems.push(format!("permission: no permission numbered {i}"));
                    None
                }),
                Err(_) => None,
            }
        } else {
            let mut kind = 0;
            unsafe { sys::napi_typeof(env, argv[1], &mut kind) };
            if kind != ValueType::napi_undefined {
                problems.push("permission: expected a permission number".to_owned());
            }
            None
        };
    let (mut ip_buf, mut ip_heap) = ([MaybeUninit::<u8>::uninit(); STACK_STRING], String::new());
    let read_ip = if argc < 4 {
        Ok(None)
    } else {
        unsafe { read_string(env, argv[3], &mut ip_buf, &mut ip_heap) }
    };
    let ip = match read_ip {
        Ok(None) => None,
        Ok(Some(text)) => latchkey::parse_ip_argument(text)
            .map_err(|problem| problems.push(problem))
            .ok(),
        Err(()) => {
            problems.push("ip: expected a string".to_owned());
            None
        }
    };
    let (mut path_buf, mut path_heap) =
        ([MaybeUninit::<u8>::uninit(); STACK_STRING], String::new());
    let path = unsafe { read_string(env, argv[2], &mut path_buf, &mut path_heap) }
        .unwrap_or_else(|()| {
            problems.push("path: expected a string".to_owned());
            None
        })
        .unwrap_or("/");
    if !problems.is_empty() {
        throw(env, "VALIDATION", &problems);
        return ptr::null_mut();
    }

    let guard = verifier.engine.borrow();
    let Some(engine) = guard.as_ref() else {
        throw(env, "CLOSED", &["the engine is closed".to_owned()]);
        return ptr::null_mut();
    };
    let decision = engine.verify(&VerifyRequest {
        credential,
        permission,
        ip,
        path,
    });
    drop(guard);

    // SAFETY: out points at OUT_LEN f64s kept alive by out_ref (see the module invariants).
    let out = unsafe { std::slice::from_raw_parts_mut(verifier.out, OUT_LEN) };
    match decision.limit() {
        Some(limit) => {
            out[Slot::Limit as usize] = f64::from(limit.limit);
            out[Slot::Remaining as usize] = f64::from(limit.remaining);
            // Unix seconds are far inside f64's exact integer range.
            #[allow(clippy::cast_precision_loss)]
            let reset = limit.reset_at as f64;
            out[Slot::Reset as usize] = reset;
            out[Slot::RetryAfter as usize] = f64::from(limit.retry_after.map_or(0, |s| s.max(1)));
        }
        None => out[Slot::Limit as usize] = -1.0,
    }
    out[Slot::Missing as usize] = decision
        .missing_permission()
        .map_or(-1.0, |p| f64::from(p.index()));
    let code = decision.code().map_or(0, |c| c.index() + 1);
    // The code is at most 9.
    #[allow(clippy::cast_possible_wrap)]
    let code = code as i32;

    let mut result = ptr::null_mut();
    let Some(identity) = decision.key_identity() else {
        out[Slot::Key as usize] = -1.0;
        unsafe { sys::napi_create_int32(env, code, &mut result) };
        return result;
    };
    let (number, new) = verifier.identities.borrow_mut().number(identity.serial());
    out[Slot::Key as usize] = f64::from(number);
    if !new {
        unsafe { sys::napi_create_int32(env, code, &mut result) };
        return result;
    }
    // SAFETY: every value is created in this call's scope and stored into `result`.
    unsafe {
        let mut element = ptr::null_mut();
        sys::napi_create_array_with_length(env, 4, &mut result);
        sys::napi_create_int32(env, code, &mut element);
        sys::napi_set_element(env, result, 0, element);
        let store_id = identity.store_id();
        for (i, text) in [identity.key_id(), store_id.as_str(), identity.environment()]
            .into_iter()
            .enumerate()
        {
            sys::napi_create_string_utf8(
                env,
                text.as_ptr().cast::<c_char>(),
                text.len() as isize,
                &mut element,
            );
            sys::napi_set_element(env, result, i as u32 + 1, element);
        }
    }
    result
}

/// `record(storeId, keyId, code, method, path, status, latencyUs[, ip])`: the request a
/// decision answered, into its store's request log (`Engine.recordRequest` checks the
/// arguments' types first). Bound like `verify`, for the same reason: the napi-rs method took
/// 1.5-2 µs a call, most of it converting five strings into owned ones, where the core's
/// record is a fraction of that. The address is last and only given when there is one.
unsafe extern "C" fn record(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: env and info are this call's.
    let Some((argc, argv, data)) = (unsafe { arguments::<8>(env, info, "record") }) else {
        return ptr::null_mut();
    };
    // SAFETY: data is the Box<Shared> leaked in `bind_record`, alive until its finalizer.
    let shared = unsafe { &*data.cast::<Shared>() };

    let mut problems = Vec::new();
    let mut text = |at: usize, name: &str, required: bool, buf, heap| {
        // SAFETY: the value is one of this call's arguments.
        match unsafe { read_string(env, argv[at], buf, heap) } {
            Ok(Some(text)) => Some(text),
            Ok(None) if !required => None,
            _ => {
                problems.push(format!("{name}: expected a string"));
                None
            }
        }
    };
    let mut bufs = [[MaybeUninit::<u8>::uninit(); STACK_STRING]; 5];
    let mut heaps: [String; 5] = Default::default();
    let [store_buf, key_buf, method_buf, path_buf, ip_buf] = &mut bufs;
    let [store_heap, key_heap, method_heap, path_heap, ip_heap] = &mut heaps;
    let store_id = text(0, "storeId", true, store_buf, store_heap);
    let key_id = text(1, "keyId", false, key_buf, key_heap);
    let method = text(3, "method", true, method_buf, method_heap);
    let path = text(4, "path", true, path_buf, path_heap);
    let ip = if argc < 8 {
        None
    } else {
        text(7, "ip", false, ip_buf, ip_heap)
    };
    // A whole number from 0 to u32::MAX (Node-API's own u32 read would wrap 2^32 + 200 to 200).
    let whole = |at: usize| {
        let mut n = f64::NAN;
        // SAFETY: the value is one of this call's arguments.
        unsafe { sys::napi_get_value_double(env, argv[at], &mut n) };
        // In range and whole, so the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n)).then_some(n as u32)
    };
    let code = whole(2).unwrap_or_else(|| {
        problems.push("code: expected a decision code number".to_owned());
        0
    });
    let code = crate::decision_code(code, &mut problems);
    let status = whole(5).unwrap_or_else(|| {
        problems.push("status: expected an HTTP status".to_owned());
        0
    });
    let mut latency = f64::NAN;
    // SAFETY: the value is one of this call's arguments.
    unsafe { sys::napi_get_value_double(env, argv[6], &mut latency) };
    if !latency.is_finite() || latency < 0.0 {
        problems.push("latencyUs: must be a number ≥ 0".to_owned());
    }
    let (Some(store_id), Some(method), Some(path), true) =
        (store_id, method, path, problems.is_empty())
    else {
        throw(env, "VALIDATION", &problems);
        return ptr::null_mut();
    };
    let guard = shared.borrow();
    let Some(engine) = guard.as_ref() else {
        throw(env, "CLOSED", &["the engine is closed".to_owned()]);
        return ptr::null_mut();
    };
    // Float to integer casts saturate; latency is checked finite and ≥ 0 above.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let latency_us = latency as u64;
    if let Err(err) =
        engine.record_outcome(store_id, key_id, code, method, path, status, ip, latency_us)
    {
        throw(env, err.code(), &err.problems());
        return ptr::null_mut();
    }
    let mut undefined = ptr::null_mut();
    unsafe { sys::napi_get_undefined(env, &mut undefined) };
    undefined
}

unsafe extern "C" fn finalize_record(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: data is the Box<Shared> leaked in `bind_record`; the finalizer runs exactly once.
    drop(unsafe { Box::from_raw(data.cast::<Shared>()) });
}

/// A JS function `record(storeId, keyId, code, method, path, status, latencyUs[, ip])` bound
/// to `engine` (see [`record`]).
pub(crate) fn bind_record(env: sys::napi_env, engine: Shared) -> napi::Result<sys::napi_value> {
    let data = Box::into_raw(Box::new(engine)).cast::<c_void>();
    // SAFETY: the callback and data follow the invariants of the module documentation.
    unsafe { function(env, c"record", Some(record), data, finalize_record) }
        .ok_or_else(|| napi::Error::from_reason("binding record: cannot create the function"))
}

unsafe extern "C" fn finalize(env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: data is the Box<Verifier> leaked in `bind`; the finalizer runs exactly once.
    let verifier = unsafe { Box::from_raw(data.cast::<Verifier>()) };
    unsafe { sys::napi_delete_reference(env, verifier.out_ref) };
}

/// A JS function `verify(credential, permissionIndex, path[, ip])` bound to `engine`, writing
/// its limit fields into `out` (a `Float64Array` of [`OUT_LEN`]).
pub(crate) fn bind(
    env: sys::napi_env,
    engine: Shared,
    out: sys::napi_value,
) -> napi::Result<sys::napi_value> {
    let fail = |what: &str| napi::Error::from_reason(format!("binding verify: {what}"));
    let mut kind = 0;
    let mut length = 0usize;
    let mut data: *mut c_void = ptr::null_mut();
    let mut buffer = ptr::null_mut();
    let mut offset = 0usize;
    // SAFETY: env and out belong to the calling napi-rs function's scope.
    let status = unsafe {
        sys::napi_get_typedarray_info(
            env,
            out,
            &mut kind,
            &mut length,
            &mut data,
            &mut buffer,
            &mut offset,
        )
    };
    if status != Status::napi_ok || kind != TypedarrayType::float64_array || length != OUT_LEN {
        return Err(fail("out must be a Float64Array of 6"));
    }
    let mut out_ref = ptr::null_mut();
    if unsafe { sys::napi_create_reference(env, out, 1, &mut out_ref) } != Status::napi_ok {
        return Err(fail("cannot hold the out array"));
    }
    let verifier = Box::into_raw(Box::new(Verifier {
        engine,
        out: data.cast::<f64>(),
        out_ref,
        identities: RefCell::new(Identities::default()),
    }));
    // SAFETY: the callback and data follow the invariants of the module documentation.
    unsafe {
        function(
            env,
            c"verify",
            Some(verify),
            verifier.cast::<c_void>(),
            finalize,
        )
    }
    .ok_or_else(|| fail("cannot create the function"))
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

/// The code table the typed layer reads once: `[name, status, message]` for code 0 (allowed)
/// and each deny code, in the order `verify` numbers them.
pub(crate) fn codes() -> Vec<(&'static str, u16, &'static str)> {
    std::iter::once(("OK", 200, "OK"))
        .chain(
            DenyCode::ALL
                .iter()
                .map(|c| (c.as_str(), c.http_status(), c.message())),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(n: u64) -> Option<NonZeroU64> {
        NonZeroU64::new(n)
    }

    #[test]
    fn an_identity_is_sent_once_until_another_takes_its_slot() {
        let mut ids = Identities::default();
        assert_eq!(ids.number(serial(7)), (7, true));
        assert_eq!(ids.number(serial(7)), (7, false));
        assert_eq!(ids.number(serial(8)), (8, true));
        assert_eq!(ids.number(serial(7)), (7, false));
        // Same slot, another serial: sent, and the first must then be sent again.
        let twin = 7 + Identities::CAP as u64;
        assert_eq!(ids.number(serial(twin)), (7, true));
        assert_eq!(ids.number(serial(7)), (7, true));
        assert_eq!(ids.number(serial(twin)), (7, true));
    }

    #[test]
    fn unnumbered_identities_are_always_sent_and_never_mistaken() {
        let mut ids = Identities::default();
        let zero_slot = serial(Identities::CAP as u64);
        assert_eq!(ids.number(zero_slot), (0, true));
        assert_eq!(ids.number(None), (0, true));
        assert_eq!(ids.number(None), (0, true));
        // Slot 0 was overwritten by the unnumbered identity: its serial is sent again.
        assert_eq!(ids.number(zero_slot), (0, true));
        assert_eq!(ids.number(zero_slot), (0, false));
    }
}
