#!/usr/bin/env bash
# Fails when the repository tracks a build output: any file over 1 MiB, or
# any compiled binary (ELF, PE, Mach-O), whatever its name or file mode.
# Scripts stay executable: only the content's magic bytes count.
#   bash scripts/check-tree.sh [DIR]    check the git tree at DIR (default .)
#   bash scripts/check-tree.sh --self-test
set -euo pipefail

limit=$((1024 * 1024))

check() {
  # Two processes over the whole list, not several per file: under load a
  # fork per file took over a minute.
  local dir=$1 out
  out=$(cd "$dir" && git ls-files -z | xargs -0 -r perl -e '
    my $bad = 0;
    for my $f (@ARGV) {
      next unless -f $f;
      my $size = -s $f;
      if ($size > '"$limit"') { print "tracked file over 1 MiB: $f ($size bytes)\n"; $bad = 1 }
      open(my $fh, "<", $f) or next;
      read($fh, my $b, 4); close $fh;
      my $m = unpack("H*", $b);
      if ($m =~ /^7f454c46/) { print "tracked ELF binary: $f\n"; $bad = 1 }
      elsif ($m =~ /^4d5a/) { print "tracked PE (Windows) binary: $f\n"; $bad = 1 }
      elsif ($m =~ /^(feedface|feedfacf|cefaedfe|cffaedfe|cafebabe)$/) { print "tracked Mach-O binary: $f\n"; $bad = 1 }
    }
    exit $bad;
  ') && return 0
  printf '%s\n' "$out"
  return 1
}

self_test() {
  local d
  d=$(mktemp -d)
  trap 'rm -rf "$d"' RETURN
  git -C "$d" init -q
  printf '#!/bin/sh\necho hi\n' > "$d/ok.sh"; chmod +x "$d/ok.sh"
  git -C "$d" add ok.sh
  check "$d" >/dev/null || { echo "self-test: a clean tree was refused"; return 1; }
  local kind
  for kind in elf pe macho big; do
    case $kind in
      elf) printf '\x7fELF\x02\x01\x01' > "$d/x" ;;
      pe) printf 'MZ\x90\x00' > "$d/x" ;;
      macho) printf '\xcf\xfa\xed\xfe' > "$d/x" ;;
      big) head -c $((limit + 1)) /dev/zero | tr '\0' 'a' > "$d/x" ;;
    esac
    chmod -x "$d/x"
    git -C "$d" add x
    if check "$d" >/dev/null; then echo "self-test: a tracked $kind file passed"; return 1; fi
    git -C "$d" rm -q --cached x
  done
  echo "check-tree self-test: ok (a clean tree accepted; ELF, PE, Mach-O and over-1-MiB files refused)"
}

if [ "${1:-}" = "--self-test" ]; then self_test; else check "${1:-.}"; fi
