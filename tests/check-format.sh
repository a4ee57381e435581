#!/usr/bin/env bash
# check-format.sh: fails when a C source or header differs from what clang-format (.clang-format) makes of it.
set -u
cd "$(dirname "$0")/.." || exit 1

if ! command -v clang-format >/dev/null 2>&1; then
    echo "check-format: clang-format is not installed; run 'make deps' (Debian package clang-format)" >&2
    exit 1
fi
if [ ! -f .clang-format ]; then
    echo "check-format: no .clang-format at the top of the tree" >&2
    exit 1
fi

# The tracked C files; outside a git checkout (a source tarball), the same folders by name.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files '*.c' '*.h')
else
    mapfile -t files < <(find accel core hw include machine migration monitor tools vmm tests \
                              -type f \( -name '*.c' -o -name '*.h' \) | sort)
fi

tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT
bad=()
for f in "${files[@]}"; do
    [ -f "$f" ] || continue     # deleted in the work tree, not yet in the index
    if ! clang-format --style=file "$f" >"$tmp"; then
        echo "check-format: clang-format failed on $f" >&2
        exit 1
    fi
    cmp -s "$f" "$tmp" || bad+=("$f")
done

if [ ${#bad[@]} -gt 0 ]; then
    echo "check-format: these C files are not formatted as .clang-format says:" >&2
    printf '  %s\n' "${bad[@]}" >&2
    echo "check-format: ${#bad[@]} of ${#files[@]} C files unformatted; run 'make format' to fix them" \
         "(it rewrites them in place with clang-format)." >&2
    version=$(clang-format --version)
    case "$version" in
    *" version 14."*) ;;
    *) echo "check-format: note: the style is tuned for clang-format 14 and this is: $version" >&2 ;;
    esac
    exit 1
fi
echo "check-format: ${#files[@]} C files formatted"
