#!/usr/bin/env python3
"""tests/layers.py catches what it claims to: an upward include and a circle."""
import os
import subprocess
import sys
import tempfile

LAYERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'layers.py')


def tree(files):
    root = tempfile.mkdtemp(prefix='tern-layers-')
    for path, text in files.items():
        os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
        with open(os.path.join(root, path), 'w') as f:
            f.write(text)
    return root


def run(root):
    p = subprocess.run([sys.executable, LAYERS, root], capture_output=True, text=True)
    return p.returncode, p.stderr


BASE = {
    'include/tern/util.h': '',
    'include/tern/machine.h': '#include "tern/util.h"\n',
    'core/util.c': '#include "tern/util.h"\n',
    'machine/machine.c': '#include "tern/machine.h"\n#include "tern/util.h"\n',
}


def main():
    rc, err = run(tree(BASE))
    assert rc == 0, err

    upward = dict(BASE)
    upward['core/util.c'] = '#include "tern/util.h"\n#include "tern/machine.h"\n'
    rc, err = run(tree(upward))
    assert rc == 1 and 'core/util.c:2: core/ includes machine/machine' in err, err

    circle = dict(BASE)
    circle['include/tern/cpus.h'] = ''
    circle['machine/cpus.c'] = '#include "tern/cpus.h"\n#include "tern/machine.h"\n'
    circle['machine/machine.c'] += '#include "tern/cpus.h"\n'
    rc, err = run(tree(circle))
    assert rc == 1 and 'module circle: machine/cpus -> machine/machine -> machine/cpus' in err, err

    rc, err = run(os.path.join(os.path.dirname(LAYERS), '..'))
    assert rc == 0, err
    print('ok')


if __name__ == '__main__':
    main()
