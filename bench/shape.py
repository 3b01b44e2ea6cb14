"""The code's shape, measured: what issue 20 asked to be kept in check.

    python bench/shape.py [TREE] [-v]   # TREE: a checkout (default: this one); -v lists shared SQL

Prints one line per measure. Statements are compared after normalising
whitespace and placeholders (``%s`` -> ``?``), so "the same SQL in both stores"
means the same text once the driver's placeholder is set aside. The tools it
calls (ruff, mypy) are the ones on PATH, with the TREE's own configuration.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|DROP|ALTER|PRAGMA)\b", re.I)
# a store row read by position: row[2], rec.params[4][4], ...[3] == "PENDING"
POSITIONAL = re.compile(r"\b(row|rows?\[[^\]]*\]|r|wf|step|params|info|found)\[[0-9]+\]|\]\[[0-9]+\] ==")


def _sql_strings(path: Path) -> set[str]:
    """Every string constant (joined implicit concatenations) that reads as SQL."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_START.match(node.value):
            text = " ".join(node.value.replace("%s", "?").split())
            if len(text) > 20:
                out.add(text)
    return out


def _methods(path: Path) -> dict[str, str]:
    """Class methods of a module: name -> normalised source (ast dump, placeholders unified)."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    body = ast.Module(body=item.body, type_ignores=[])  # annotations aside
                    out[item.name] = ast.dump(body, include_attributes=False).replace("%s", "?")
    return out


def _long_functions(paths: list[Path], limit: int = 60) -> list[str]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append(f"{path.name}:{node.name}={length}")
    return found


def _run(cmd: list[str], tree: Path) -> str:
    """A tool of this interpreter's environment (``python -m mypy``), run in ``tree``."""
    done = subprocess.run([sys.executable, "-m", *cmd], cwd=tree, capture_output=True, text=True)
    return done.stdout or done.stderr


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "-v"]
    tree = Path(args[0] if args else Path(__file__).resolve().parent.parent).resolve()
    src = tree / "src" / "durably"
    store = src / "store"
    sqlite_files = [p for p in store.glob("_*.py")]
    pg_files = list((store / "pg").glob("_*.py"))
    sql_sqlite = set().union(*(_sql_strings(p) for p in sqlite_files))
    sql_pg = set().union(*(_sql_strings(p) for p in pg_files))
    both_sql = sorted(sql_sqlite & sql_pg)
    print(f"SQL statements written in both the SQLite and the PostgreSQL files: {len(both_sql)}")
    for text in both_sql if "-v" in sys.argv else ():
        print("   ", text[:110])
    m_sqlite, m_pg = _methods(store / "_store.py"), _methods(store / "pg" / "_store.py")
    both = m_sqlite.keys() & m_pg.keys()
    same = [n for n in both if m_sqlite[n] == m_pg[n]]
    print(f"methods defined in both concrete stores: {len(both)} ({len(same)} identical)")
    lines = {p: len(p.read_text().splitlines()) for p in store.rglob("*.py")}
    total = sum(lines.values())
    driver = re.compile(r"^\s*(import|from) (apsw|psycopg)\b", re.M)
    shared = sum(n for p, n in lines.items() if not driver.search(p.read_text()))
    print(f"store/ lines: {total}; in modules that import no driver (shared): {shared} ({shared / total:.0%})")
    outside = [p for p in src.rglob("*.py") if store not in p.parents]
    hits = [
        f"{p.relative_to(src)}:{i}"
        for p in outside
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if POSITIONAL.search(line)
    ]
    print(f"lines outside store/ indexing a row by position: {len(hits)}")
    all_src = list(src.rglob("*.py"))
    longf = _long_functions(all_src)
    print(f"functions over 60 lines: {len(longf)} {' '.join(sorted(longf))}")
    big = sorted((n, p.relative_to(src)) for p in all_src if (n := len(p.read_text().splitlines())) > 600)
    print(f"modules over 600 lines: {len(big)} {' '.join(f'{p}={n}' for n, p in big)}")
    ignores = sum(line.count("type: ignore") for p in all_src for line in p.read_text().splitlines())
    print(f"'# type: ignore' lines in src/durably: {ignores}")
    mypy = _run(["mypy", "--strict", "src/durably"], tree).strip().splitlines()
    print(f"mypy --strict src/durably: {mypy[-1] if mypy else '?'}")
    ruff = _run(["ruff", "check", "--output-format", "concise", "--exit-zero", "src"], tree)
    print(f"ruff check src (the tree's own config): {ruff.count(chr(10)) - 1 if 'Found' in ruff else 0} findings")
    tests = [p for d in ("tests", "crashtests") for p in (tree / d).rglob("*.py")]
    private = re.compile(r"\b(engine|eng|e|store|ctx|handle|h|journal|runner)\._[a-z]\w*")
    reads = sum(len(private.findall(p.read_text())) for p in tests)
    raw = sum(len(re.findall(r"_store\.(query|read_one|execute)\(", p.read_text())) for p in tests)
    print(f"private reads on durably objects in tests/ and crashtests/: {reads} ({raw} raw store queries)")


if __name__ == "__main__":
    main()
