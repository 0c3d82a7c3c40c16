"""Not a test module: `make python` type-checks it with `mypy --strict`, with the package, so
the stubs and annotations stay usable from typed code (Starlette and FastAPI included)."""

from typing import Dict, List, Optional

from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette

import latchkey
from latchkey.asgi import LatchkeyMiddleware, install, require

eng = latchkey.Engine.memory(cache_mb=8, webhook_timeout=5.0)
store, default_key = eng.create_store("Typed")
created = eng.create_key(store.id, name="ERP", permissions={"Orders": ["View"]})
decision = eng.verify(created.key, area="Orders", action="View", ip="127.0.0.1", path="/api/v1/orders")
allowed: bool = decision.allowed
headers = decision.headers

app = FastAPI()
install(app)


@app.get("/orders")
def orders(d: latchkey.Decision = Depends(require(eng, "Orders"))) -> Dict[str, Optional[str]]:
    return {"key": d.key_id}


wrapped = LatchkeyMiddleware(Starlette(), eng, area_for=lambda path: "Orders")
clients = [TestClient(wrapped), TestClient(app)]

requests: int = eng.usage(store.id).requests
portal: Optional[latchkey.Page] = eng.portal_list("cps_x", "Orders", limit=5)
opened: Optional[latchkey.Record] = eng.portal_customer("cps_x")
with latchkey.Engine.memory() as scoped:
    scoped.flush()
rolled: latchkey.CreatedKey = eng.regenerate_key(store.id, created.id, overlap_seconds=3600)
made: latchkey.Created = eng.create(store.id, "Packages", {"name": "Gold"}, idempotency_key="gold-1")
replayed: bool = made.replayed
findings: List[latchkey.Record] = eng.check_leaks("API_KEY=lk_…", stop=False)
scrubbed: str = latchkey.redact("GET /api/v1/orders/lk_…", hex=True)
