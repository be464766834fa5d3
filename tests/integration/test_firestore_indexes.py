"""Every state-store query the code makes has the Firestore composite index it needs.

The Firestore emulator does not enforce composite indexes, so a missing one only shows in
production. This test is the guard: it reads the queries two ways and checks each against
infra/firestore.indexes.json.

* statically: every ``.query(`` call in the use-cases, the app and the functions, parsed
  from the source (a call it cannot read fails the test: make it literal or teach the
  parser);
* dynamically: a short embedded pipeline run with a recording state store, which must
  make no query the static scan missed.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.app import pipeline
from prometheus_trader.app.settings import Settings
from prometheus_trader.app.wiring import Runtime
from prometheus_trader.domain.users import RiskProfile, TradingMode, User
from prometheus_trader.ports import Document, Filter
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INDEXES_FILE = ROOT / "infra" / "firestore.indexes.json"
PACKAGE = ROOT / "shared" / "prometheus_trader"
EQUALITY_OPS = frozenset({"==", "in"})
INEQUALITY_OPS = frozenset({"<", "<=", ">", ">=", "!="})
NAME = "__name__"


@dataclass(frozen=True, order=True)
class QueryShape:
    """What decides the index a query needs."""

    collection: str
    equalities: tuple[str, ...]  # sorted
    inequalities: tuple[str, ...]  # sorted
    order_by: str | None
    descending: bool

    @classmethod
    def of(
        cls,
        collection: str,
        filters: Sequence[tuple[str, str]],
        order_by: str | None,
        descending: bool,
    ) -> QueryShape:
        unknown = sorted(op for _, op in filters if op not in EQUALITY_OPS | INEQUALITY_OPS)
        assert not unknown, f"unknown filter operators {unknown}"
        return cls(
            collection,
            tuple(sorted({f for f, op in filters if op in EQUALITY_OPS})),
            tuple(sorted({f for f, op in filters if op in INEQUALITY_OPS})),
            order_by,
            descending,
        )

    def required_tail(self) -> list[tuple[str, str]]:
        """The ordered (field, order) part of the index, after the equality fields."""
        direction = "DESCENDING" if self.descending else "ASCENDING"
        tail: list[tuple[str, str]] = []
        if self.order_by is not None:
            tail.append((self.order_by, direction))
        tail += [(f, "ASCENDING") for f in self.inequalities if f != self.order_by]
        if self.descending and self.order_by is None:
            tail.append((NAME, direction))
        return tail

    def needs_composite(self) -> bool:
        """Equality on one field, or order/range on one field, is served by the
        single-field indexes Firestore keeps automatically; anything more needs one."""
        head = set(self.equalities) - {f for f, _ in self.required_tail()}
        return len(head) + len(self.required_tail()) > 1

    def served_by(self, index: dict[str, Any]) -> bool:
        """Equality fields first (any order), then the ordered fields in order."""
        if index["collectionGroup"] != self.collection:
            return False
        fields = [(f["fieldPath"], f["order"]) for f in index["fields"]]
        tail = self.required_tail()
        if fields and fields[-1][0] == NAME and not (tail and tail[-1][0] == NAME):
            fields = fields[:-1]  # an explicit trailing __name__ changes nothing here
        head = set(self.equalities) - {f for f, _ in tail}
        return {f for f, _ in fields[: len(head)]} == head and fields[len(head) :] == tail


# ---------------------------------------------------------------- the declared indexes
def declared_indexes() -> list[dict[str, Any]]:
    data = json.loads(INDEXES_FILE.read_text())
    return list(data["indexes"])


def test_index_file_has_the_firebase_cli_format() -> None:
    data = json.loads(INDEXES_FILE.read_text())
    assert set(data) == {"indexes", "fieldOverrides"}
    for index in data["indexes"]:
        assert set(index) == {"collectionGroup", "queryScope", "fields"}
        assert index["queryScope"] == "COLLECTION"
        assert len(index["fields"]) >= 2, "a one-field index is automatic: do not declare it"
        for field in index["fields"]:
            assert set(field) == {"fieldPath", "order"}
            assert field["order"] in ("ASCENDING", "DESCENDING")
    keys = [json.dumps(i, sort_keys=True) for i in data["indexes"]]
    assert len(keys) == len(set(keys)), "duplicate index"


# ---------------------------------------------------------------- static scan
def _sources() -> list[Path]:
    files = sorted((PACKAGE / "usecases").glob("*.py")) + sorted((PACKAGE / "app").glob("*.py"))
    files += sorted((PACKAGE / "adapters" / "paper").glob("*.py"))  # the paper ledger's queries
    functions = ROOT / "functions"
    # staged functions carry a vendored copy of the package: scan only their own code
    files += sorted(p for p in functions.rglob("*.py") if "prometheus_trader" not in p.parts)
    return files


def _literal(node: ast.expr, where: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    raise AssertionError(f"{where}: cannot read {ast.unparse(node)!r} (use a literal)")


def _collection(node: ast.expr, where: str) -> str:
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "Collections"
    ):
        return str(getattr(Collections, node.attr))
    value = _literal(node, where)
    assert isinstance(value, str), f"{where}: collection must be a string"
    return value


def _filter_of(item: ast.expr, where: str) -> tuple[str, str]:
    assert (
        isinstance(item, ast.Call)
        and isinstance(item.func, ast.Name)
        and item.func.id == "Filter"
        and len(item.args) >= 2
    ), f"{where}: cannot read filter {ast.unparse(item)!r}"
    return str(_literal(item.args[0], where)), str(_literal(item.args[1], where))


def _filter_variants(
    node: ast.expr | None, scope: ast.AST, where: str
) -> list[list[tuple[str, str]]]:
    """The filter lists a call can pass: a literal list, or a local list variable built
    from a literal and ``.append(Filter(...))`` calls (each append may or may not run)."""
    if node is None:
        return [[]]
    if isinstance(node, ast.List | ast.Tuple):
        return [[_filter_of(item, where) for item in node.elts]]
    assert isinstance(node, ast.Name), f"{where}: filters must be a literal or a local list"
    base: list[tuple[str, str]] | None = None
    optional: list[tuple[str, str]] = []
    for sub in ast.walk(scope):
        if isinstance(sub, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == node.id for t in sub.targets
        ):
            assert base is None and isinstance(sub.value, ast.List), (
                f"{where}: {node.id} must be assigned once, from a literal list"
            )
            base = [_filter_of(item, where) for item in sub.value.elts]
        if (
            isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Attribute)
            and isinstance(sub.func.value, ast.Name)
            and sub.func.value.id == node.id
        ):
            assert sub.func.attr == "append" and len(sub.args) == 1, (
                f"{where}: only {node.id}.append(Filter(...)) is understood"
            )
            optional.append(_filter_of(sub.args[0], where))
    assert base is not None, f"{where}: cannot find where {node.id} is built"
    return [
        base + [f for bit, f in enumerate(optional) if mask >> bit & 1]
        for mask in range(2 ** len(optional))
    ]


def _shapes_of_call(call: ast.Call, scope: ast.AST, where: str) -> list[QueryShape]:
    args: dict[str, ast.expr | None] = dict(
        zip(("collection", "filters", "order_by", "descending"), call.args, strict=False)
    )
    args.update({k.arg: k.value for k in call.keywords if k.arg is not None})
    collection_node = args.get("collection")
    assert collection_node is not None, f"{where}: query() without a collection"
    order_node = args.get("order_by")
    descending_node = args.get("descending")
    return [
        QueryShape.of(
            _collection(collection_node, where),
            filters,
            None if order_node is None else _literal(order_node, where),
            False if descending_node is None else bool(_literal(descending_node, where)),
        )
        for filters in _filter_variants(args.get("filters"), scope, where)
    ]


# Generic helpers whose one query site takes its collection and filters from the
# constructor: their shapes are read from every constructor call instead.
# file -> (class, index of the collection argument; the filters follow it)
GENERIC_QUERY_HELPERS = {"live_docs.py": ("LiveDocs", 2)}


def _helper_call(node: ast.Call) -> ast.Call | None:
    """A generic helper's constructor call as the ``query(collection, filters)`` it makes."""
    for name, first in GENERIC_QUERY_HELPERS.values():
        if isinstance(node.func, ast.Name) and node.func.id == name:
            return ast.Call(func=node.func, args=node.args[first : first + 2], keywords=[])
    return None


def static_shapes() -> set[QueryShape]:
    shapes = set()
    for path in _sources():
        generic = path.name in GENERIC_QUERY_HELPERS
        tree = ast.parse(path.read_text(), filename=str(path))
        scopes: list[ast.AST] = [tree]
        scopes += [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        for scope in scopes:
            # only calls whose innermost function is this scope
            nested = {
                id(n)
                for f in ast.walk(scope)
                if isinstance(f, ast.FunctionDef) and f is not scope
                for n in ast.walk(f)
            }
            for node in ast.walk(scope):
                if id(node) in nested or not isinstance(node, ast.Call):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                helper = _helper_call(node)
                if helper is not None:
                    shapes.update(_shapes_of_call(helper, scope, where))
                elif (
                    not generic
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "query"
                ):
                    shapes.update(_shapes_of_call(node, scope, where))
    return shapes


# ---------------------------------------------------------------- dynamic recording
class RecordingStateStore(SqliteStateStore):
    """The embedded store, noting the shape of every query."""

    shapes: ClassVar[set[QueryShape]] = set()

    def query(
        self,
        collection: str,
        filters: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Document]:
        RecordingStateStore.shapes.add(
            QueryShape.of(collection, [(f.field, f.op) for f in filters], order_by, descending)
        )
        return super().query(collection, filters, order_by, descending, limit)


@pytest.fixture(scope="module")
def recorded_shapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[QueryShape]]:
    """Query shapes of a 2-hour embedded run (1 h warm-up, 30 min drain)."""
    patch = pytest.MonkeyPatch()
    original_seed = pipeline.seed_users

    def seed_with_watchlist_user(rt: Runtime) -> None:
        original_seed(rt)
        # a user who trades only a watchlist, so the dispatcher's watchlist query runs
        watcher = User.with_profile(
            "watchlist-only", RiskProfile.MODERATE, mode=TradingMode.PAPER, watch_all=False
        )
        rt.state.create(Collections.USERS, watcher.user_id, watcher.model_dump(mode="json"))

    RecordingStateStore.shapes = set()
    patch.setattr(pipeline, "SqliteStateStore", RecordingStateStore)
    patch.setattr(pipeline, "seed_users", seed_with_watchlist_user)
    try:
        summary = pipeline.run_pipeline(
            Settings(
                var_dir=tmp_path_factory.mktemp("var"),
                replay_start=datetime(2025, 5, 21, 8, tzinfo=UTC),
                replay_end=datetime(2025, 5, 21, 10, tzinfo=UTC),
                warmup_hours=1,
                drain_hours=0.5,
            )
        )
    finally:
        patch.undo()
    assert summary["signals_published"] > 0, "the window must publish signals to dispatch"
    yield set(RecordingStateStore.shapes)


# ---------------------------------------------------------------- the checks
def test_static_scan_finds_the_known_queries() -> None:
    shapes = static_shapes()
    # the two queries that need an index today; if they change, the index must follow
    assert QueryShape.of("positions", [("user_id", "=="), ("status", "==")], None, False) in shapes
    assert QueryShape.of("watchlists", [("user_id", "=="), ("symbol", "==")], None, False) in shapes


def test_every_query_the_code_makes_has_its_index() -> None:
    indexes = declared_indexes()
    missing = sorted(
        s for s in static_shapes() if s.needs_composite() and not any(map(s.served_by, indexes))
    )
    assert not missing, f"add composite indexes to {INDEXES_FILE.name} for {missing}"


def test_every_declared_index_serves_a_query() -> None:
    shapes = static_shapes()
    unused = [i for i in declared_indexes() if not any(s.served_by(i) for s in shapes)]
    assert not unused, f"indexes no query uses (they cost writes): {unused}"


def test_pipeline_makes_no_query_the_scan_missed(recorded_shapes: set[QueryShape]) -> None:
    assert recorded_shapes - static_shapes() == set()
    # the run reached the queries that need a composite index
    assert {s for s in recorded_shapes if s.needs_composite()} == {
        QueryShape.of("positions", [("user_id", "=="), ("status", "==")], None, False),
        QueryShape.of("watchlists", [("user_id", "=="), ("symbol", "==")], None, False),
    }


@pytest.mark.parametrize(
    ("shape", "index_fields", "served"),
    [
        # equality fields in any order
        (QueryShape.of("c", [("a", "=="), ("b", "==")], None, False), ["b", "a"], True),
        (QueryShape.of("c", [("a", "=="), ("b", "==")], None, False), ["a", "x"], False),
        # equality then order_by, with the direction
        (QueryShape.of("c", [("a", "==")], "t", False), ["a", "t"], True),
        (QueryShape.of("c", [("a", "==")], "t", True), ["a", "t"], False),
        (QueryShape.of("c", [("a", "==")], "t", True), ["a", "-t"], True),
        (QueryShape.of("c", [("a", "==")], "t", False), ["t", "a"], False),
        # equality then range
        (QueryShape.of("c", [("a", "=="), ("t", ">=")], None, False), ["a", "t"], True),
        # descending by id needs __name__ descending
        (QueryShape.of("c", [("a", "==")], None, True), ["a", f"-{NAME}"], True),
    ],
)
def test_index_matching_rules(shape: QueryShape, index_fields: list[str], served: bool) -> None:
    index = {
        "collectionGroup": "c",
        "queryScope": "COLLECTION",
        "fields": [
            {"fieldPath": f.lstrip("-"), "order": "DESCENDING" if f[0] == "-" else "ASCENDING"}
            for f in index_fields
        ],
    }
    assert shape.needs_composite()
    assert shape.served_by(index) is served


@pytest.mark.parametrize(
    "shape",
    [
        QueryShape.of("c", [], None, False),
        QueryShape.of("c", [("a", "==")], None, False),
        QueryShape.of("c", [("a", "==")], "a", False),
        QueryShape.of("c", [("t", ">")], "t", True),
        QueryShape.of("c", [], "t", True),
    ],
)
def test_single_field_queries_need_no_composite_index(shape: QueryShape) -> None:
    assert not shape.needs_composite()
