"""Every TensorRT name lepton-edge uses, found in its own source, checked against a real
`tensorrt` module. Run in a subprocess that imported NVIDIA's bindings over stub libraries
(scripts/trt_bindings.py); prints one JSON object: the names checked and the problems.

What counts as a TensorRT name, found with `ast` so that a new call is covered without a list:

- attribute chains on the module, which the package always binds as `trt` (or `tensorrt`):
  `trt.Builder`, `trt.Logger.WARNING`, `trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED`;
- attributes of TensorRT objects, typed by annotation (`engine: tensorrt.ICudaEngine`, dataclass
  fields, `self.x: tensorrt.X` in methods; `| None` allowed), by construction (`trt.Builder(...)`)
  or by the return type NVIDIA's pybind11 signature gives the method that made them
  (`builder.create_network(...)` -> `INetworkDefinition`);
- annotations `tensorrt.X` themselves (a misspelt class is a problem too; the module is
  imported under TYPE_CHECKING for them, so they cost nothing at run time).

An attribute *assignment* on a TensorRT object must hit a settable property: the classes have
no instance `__dict__` (`__dictoffset__ == 0`), so anything else raises AttributeError at run
time (issue 14: `engine._lepton_runtime = runtime`).
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

MODULE_NAMES = ("trt", "tensorrt")
Type = tuple[str, Any]  # ("mod", module) | ("cls", class) | ("inst", class) | ("local", name)


class Checker:
    def __init__(self, trt: Any, root: Path) -> None:
        self.trt = trt
        self.root = root
        self.checked: set[str] = set()
        self.problems: list[str] = []

    # -------------------------------------------------------------- types

    def annotation(self, node: ast.expr | None, local: dict[str, dict[str, str]]) -> Type | None:
        if node is None:
            return None
        text = ast.unparse(node).strip("'\"")
        for part in (p.strip() for p in text.split("|")):
            if part.startswith(("trt.", "tensorrt.")):
                name = part.split(".", 1)[1]
                cls = getattr(self.trt, name, None)
                if not isinstance(cls, type):
                    self.problem(node, f"annotation {part}: tensorrt has no class {name}")
                    return None
                self.checked.add(f"tensorrt.{name}")
                return ("inst", cls)
            if part in local:
                return ("local", part)
        return None

    def typeof(self, node: ast.expr, env: dict[str, Type], local: dict[str, dict[str, str]],
               fields: dict[str, dict[str, Type]]) -> Type | None:
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            return ("mod", self.trt) if node.id in MODULE_NAMES else None
        if isinstance(node, ast.Attribute):
            base = self.typeof(node.value, env, local, fields)
            if base is None:
                return None
            kind, obj = base
            if kind == "local":
                return fields.get(obj, {}).get(node.attr)
            if kind == "inst":
                return None  # a property's type is not in its signature
            member = getattr(obj, node.attr, None)
            if isinstance(member, type):
                return ("cls", member)
            if kind == "cls" and isinstance(member, obj):  # an enum member
                return ("inst", obj)
            return None
        if isinstance(node, ast.Call):
            func = self.typeof(node.func, env, local, fields)
            if func is not None and func[0] == "cls":
                return ("inst", func[1])
            if isinstance(node.func, ast.Attribute):
                owner = self.typeof(node.func.value, env, local, fields)
                if owner is not None and owner[0] == "inst":
                    return self.returns(getattr(owner[1], node.func.attr, None))
        return None

    def returns(self, method: Any) -> Type | None:
        """The TensorRT class a pybind11 method returns, from its signature line."""
        doc = getattr(method, "__doc__", None) or ""
        m = re.search(r"\)\s*->\s*(?:Optional\[)?tensorrt(?:_bindings)?\.tensorrt\.(\w+)", doc)
        cls = getattr(self.trt, m.group(1), None) if m else None
        return ("inst", cls) if isinstance(cls, type) else None

    # -------------------------------------------------------------- walking

    def check_file(self, path: Path) -> None:
        tree = ast.parse(path.read_text(), str(path))
        self.path = path
        local = {n.name: {} for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        fields: dict[str, dict[str, Type]] = {}
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            fields[cls.name] = {}
            for node in ast.walk(cls):
                if isinstance(node, ast.AnnAssign):
                    target = node.target
                    if isinstance(target, ast.Name) or (
                            isinstance(target, ast.Attribute) and _is_self(target.value)):
                        name = target.id if isinstance(target, ast.Name) else target.attr
                        t = self.annotation(node.annotation, local)
                        if t is not None:
                            fields[cls.name][name] = t
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for fn in (n for n in cls.body if isinstance(n, (ast.FunctionDef,))):
                self.check_function(fn, local, fields, {"self": ("local", cls.name)})
        methods = {id(f) for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                   for f in c.body if isinstance(f, ast.FunctionDef)}
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            if id(fn) not in methods:
                self.check_function(fn, local, fields, {})

    def check_function(self, fn: ast.FunctionDef, local: dict[str, dict[str, str]],
                       fields: dict[str, dict[str, Type]], env: dict[str, Type]) -> None:
        env = dict(env)
        args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
        for arg in args:
            if arg.arg in MODULE_NAMES:
                env[arg.arg] = ("mod", self.trt)
                continue
            t = self.annotation(arg.annotation, local)
            if t is not None:
                env[arg.arg] = t
        nodes = sorted((n for n in ast.walk(fn) if hasattr(n, "lineno")),
                       key=lambda n: (n.lineno, n.col_offset))
        for node in nodes:  # types flow in source order
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                t = self.annotation(node.annotation, local)
                if t is None and node.value is not None:
                    t = self.typeof(node.value, env, local, fields)
                if t is not None:
                    env[node.target.id] = t
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                    node.targets[0], ast.Name):
                t = self.typeof(node.value, env, local, fields)
                if t is not None:
                    env[node.targets[0].id] = t
            elif isinstance(node, ast.Attribute):
                self.check_attribute(node, env, local, fields)

    def check_attribute(self, node: ast.Attribute, env: dict[str, Type],
                        local: dict[str, dict[str, str]],
                        fields: dict[str, dict[str, Type]]) -> None:
        base = self.typeof(node.value, env, local, fields)
        if base is None or base[0] == "local":
            return
        kind, obj = base
        owner = "tensorrt" if kind == "mod" else obj.__name__
        name = f"{owner}.{node.attr}"
        self.checked.add(name)
        if isinstance(node.ctx, ast.Store) and kind == "inst":
            prop = getattr(obj, node.attr, None)
            if not (isinstance(prop, property) and prop.fset is not None):
                self.problem(node, f"assigning {name}: {owner} takes no new attributes "
                                   f"(__dictoffset__ {obj.__dictoffset__}) and {node.attr} is "
                                   f"not a settable property; it raises AttributeError")
            return
        if not hasattr(obj, node.attr):
            self.problem(node, f"{name} does not exist in TensorRT {self.trt.__version__}")

    def problem(self, node: ast.AST, text: str) -> None:
        rel = self.path.relative_to(self.root)
        self.problems.append(f"{rel}:{getattr(node, 'lineno', 0)}: {text}")


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def behaviour(trt: Any) -> dict[str, Any]:
    """The package's pure TensorRT helpers run against the real module."""
    sys.modules.setdefault("tensorrt", trt)
    from lepton_edge.backends.tensorrt import plan, tensors
    from lepton_edge.errors import ModelError

    out: dict[str, Any] = {"network_flags": plan.network_flags(trt),
                           "strongly_typed": int(trt.NetworkDefinitionCreationFlag
                                                 .STRONGLY_TYPED)}
    for name in ("FLOAT", "HALF", "INT8", "INT32", "BF16", "FP8"):
        data_type = getattr(trt.DataType, name, None)
        if data_type is None:
            continue
        try:
            out[name] = str(tensors.numpy_dtype(trt, data_type, "t", None))
        except ModelError as err:
            out[name] = f"ModelError: {err}"
        except Exception as err:  # what the runner would have crashed with
            out[name] = f"{type(err).__name__}: {err}"
    return out


def main() -> int:
    import tensorrt_bindings as trt

    root = Path(sys.argv[1])
    checker = Checker(trt, root)
    for path in sorted((root / "lepton_edge").rglob("*.py")):
        checker.check_file(path)
    print(json.dumps({"version": trt.__version__, "checked": sorted(checker.checked),
                      "problems": checker.problems, "behaviour": behaviour(trt)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
