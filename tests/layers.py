#!/usr/bin/env python3
"""The dependency drawing of Tern's tree, checked.

Every product folder is a layer; a file may include headers of its own layer
and of the layers below it, never above. Among modules (a .c file and the
header it implements) there must be no circle either. Exits 1 and names each
offending include when either rule is broken.

    tests/layers.py [ROOT]          check, print the folder drawing
    tests/layers.py --dot [ROOT]    the drawing as Graphviz
"""
import os
import re
import sys

# Bottom up. Folders on one line are siblings: they may not include each other.
LAYERS = [
    ['core'],
    ['accel'],
    ['hw'],
    ['machine'],
    ['migration'],
    ['monitor'],
    ['vmm', 'tools'],
]

# Headers of include/tern/ whose module is not the .c file of the same name.
HEADER_MODULE = {
    'device.h': 'core/vmstate',          # what a device exports: its vmstate table
    'pvh.h': 'core/loader',
    'hmp.h': 'monitor/monitor-hmp',
    'machine-state.h': 'machine/machine',
    'testguest.h': 'machine/machine',
    'migration-params.h': 'migration/params',
    'stream-format.h': 'migration/stream',
}

# Private headers (next to their .c files) likewise.
PRIVATE_MODULE = {
    'accel/accel-backend.h': 'accel/accel',     # the contract accel.c dispatches to
    'accel/emu/x86-internal.h': 'accel/emu/x86-cpu',
    'migration/migration-internal.h': 'migration/migration',
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_rank():
    return {folder: rank for rank, row in enumerate(LAYERS) for folder in row}


def product_files(root):
    for top in layer_rank():
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in sorted(names):
                if name.endswith(('.c', '.h')):
                    yield os.path.relpath(os.path.join(dirpath, name), root)


def module_of_source(path):
    """core/util.c -> core/util; accel/kvm/kvm.c -> accel/kvm/kvm."""
    return os.path.splitext(path)[0]


def header_modules(root, files):
    """Map 'tern/X.h' to the module implementing it."""
    by_base = {}
    for f in files:
        if f.endswith('.c'):
            by_base.setdefault(os.path.basename(f)[:-2], []).append(module_of_source(f))
    out = {}
    for name in sorted(os.listdir(os.path.join(root, 'include', 'tern'))):
        if name in HEADER_MODULE:
            out['tern/' + name] = HEADER_MODULE[name]
            continue
        owners = by_base.get(name[:-2], [])
        if len(owners) != 1:
            sys.exit(f'layers.py: include/tern/{name}: no single implementing .c '
                     f'({owners or "none"}); add it to HEADER_MODULE')
        out['tern/' + name] = owners[0]
    return out


def folder_of(module):
    return module.split('/')[0]


def edges(root):
    """(from_module, to_module, 'file:line') for every include of Tern's own headers."""
    files = list(product_files(root))
    headers = header_modules(root, files)
    for f in files:
        text = open(os.path.join(root, f)).read()
        for m in INCLUDE.finditer(text):
            inc = m.group(1)
            line = text.count('\n', 0, m.start()) + 1
            if inc in headers:
                target = headers[inc]
            else:       # a private header next to the file (or one folder up)
                local = os.path.normpath(os.path.join(os.path.dirname(f), inc))
                if not os.path.exists(os.path.join(root, local)):
                    sys.exit(f'layers.py: {f}:{line}: cannot resolve "{inc}"')
                target = PRIVATE_MODULE.get(local, module_of_source(local))
            yield PRIVATE_MODULE.get(f, module_of_source(f)), target, f'{f}:{line}'


def find_cycle(graph):
    """One circle of the graph {node: set(nodes)} as a list, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in graph}
    stack = []

    def visit(n):
        colour[n] = GREY
        stack.append(n)
        for nxt in sorted(graph.get(n, ())):
            if colour.get(nxt, WHITE) == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if colour.get(nxt, WHITE) == WHITE:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[n] = BLACK
        return None

    for n in sorted(graph):
        if colour[n] == WHITE:
            found = visit(n)
            if found:
                return found
    return None


def main(argv):
    dot = '--dot' in argv
    args = [a for a in argv if a != '--dot']
    root = args[0] if args else os.path.join(os.path.dirname(__file__), '..')
    rank = layer_rank()
    errors = []
    folder_edges = {}
    module_graph = {}
    for src, dst, where in edges(root):
        a, b = folder_of(src), folder_of(dst)
        if src != dst:
            module_graph.setdefault(src, set()).add(dst)
            module_graph.setdefault(dst, set())
        if a == b:
            continue
        folder_edges[(a, b)] = folder_edges.get((a, b), 0) + 1
        if rank[b] >= rank[a]:
            errors.append(f'{where}: {a}/ includes {dst} of {b}/, which is not below it')
    cycle = find_cycle(module_graph)
    if cycle:
        errors.append('module circle: ' + ' -> '.join(cycle))

    if dot:
        print('digraph tern {\n  rankdir=BT;')
        for (a, b), n in sorted(folder_edges.items()):
            print(f'  "{a}" -> "{b}" [label={n}];')
        print('}')
    else:
        print('layers, bottom up:', ' < '.join('|'.join(row) for row in LAYERS))
        for (a, b), n in sorted(folder_edges.items(), key=lambda e: (-rank[e[0][0]], e[0])):
            print(f'  {a + "/":11} -> {b + "/":11} {n:3} includes')
        print(f'{len(module_graph)} modules, no circle' if not cycle else '')
    for e in errors:
        print('error:', e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
