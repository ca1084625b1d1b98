"""The layers hold: no import cycle among sscard's modules (a lazy import inside a function counts
too), and the card OS imports nothing above it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cardos", "applets", "personalize", "reader_bridge", "terminal", "conformance")


def _modules() -> dict[str, Path]:
    out = {p.stem: p for p in ROOT.glob("cli*.py")}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every sscard module this one imports, anywhere in its body; `from pkg import mod` names mod."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            found.update(subs or ([base] if base in known else []))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_no_module_imports_itself_through_others():
    graph, state, cycles = _graph(), {}, []

    def visit(m, stack):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert cycles == []


def test_the_card_os_imports_nothing_above_it():
    above = [(m, n) for m, deps in _graph().items() if m.startswith("cardos")
             for n in deps if not n.startswith("cardos")]
    assert above == []


def test_the_cli_only_parses_calls_and_prints():
    """Issue 20: cli.py stays under 400 lines and none of the CLI's functions runs over 25 lines
    (decorators aside): the work is one hop away, in the module that owns it."""
    assert len((ROOT / "cli.py").read_text(encoding="utf-8").splitlines()) < 400
    long = [f"{p.name}:{n.name} {n.end_lineno - n.lineno + 1} lines" for p in ROOT.glob("cli*.py")
            for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
            if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 25]
    assert long == []


# What marks the social security application: its name, its DF names (SSSE, 1PAY.SYS.DDF01 and the
# department ADFs' SS prefix in hex), its default PIN.
SOCIAL_SECURITY_MARKS = ("social", "ssse", "53535345", "1pay", "315041592e", "123456")


def test_the_card_os_knows_neither_qa_faults_nor_the_social_security_application():
    """Issue 20: both live in plug-ins (conformance.faults as card-OS hooks, applets/ as applets)."""
    from conformance.faults import FAULTS

    marks = [m.lower() for m in (*FAULTS, *(f.__name__ for f in FAULTS.values()), *SOCIAL_SECURITY_MARKS)]
    found = [f"{p.relative_to(ROOT)}: {m}" for p in sorted((ROOT / "cardos").rglob("*.py"))
             for m in marks if m in p.read_text(encoding="utf-8").lower()]
    assert found == []
