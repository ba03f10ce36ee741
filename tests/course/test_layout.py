"""The package's architecture, checked: parts depend one way, no module imports another's private names,
one definition per public name."""
import ast
from pathlib import Path

import kdtutorial

PACKAGE = Path(kdtutorial.__file__).resolve().parent
#: part -> the parts it may import
ALLOWED = {"common": set(), "vision": {"common"}, "text": {"common"}, "ranking": {"text", "common"}, "lm": {"common"},
           "course": set()}


def modules():
    for path in sorted(PACKAGE.glob("*/*.py")):
        yield path.parent.name, path.stem, ast.parse(path.read_text())


def imported(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdtutorial"):
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("kdtutorial"):
                    yield a.name, []


def test_parts_depend_one_way():
    bad = []
    for part, name, tree in modules():
        for module, _ in imported(tree):
            other = module.split(".")[1] if module.count(".") else None
            if other and other != part and other not in ALLOWED[part]:
                bad.append(f"{part}/{name}.py imports {module}")
    assert not bad, bad


def test_no_module_imports_private_names_of_another():
    bad = [f"{part}/{name}.py imports {n} from {module}" for part, name, tree in modules()
           for module, names in imported(tree) for n in names if n.startswith("_")]
    assert not bad, bad


def test_each_public_function_and_class_is_defined_once():
    from kdtutorial.__main__ import COMMANDS

    # the subcommand protocol of ``python -m kdtutorial`` (kdtutorial/__main__.py): every command module defines these
    protocol = {"configure_parser", "command"}
    commands = {module.removeprefix("kdtutorial.").replace(".", "/") for module in COMMANDS.values()}
    seen = {}
    for part, name, tree in modules():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                if node.name in protocol and f"{part}/{name}" in commands:
                    continue
                seen.setdefault(node.name, []).append(f"{part}/{name}")
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    assert not twice, twice


def test_the_index_names_every_module_and_only_those():
    on_disk = {p.stem: p.parent.name for p in PACKAGE.glob("*/*.py") if p.stem != "__init__"}
    assert on_disk == kdtutorial.MODULES
