#!/usr/bin/env bash
# Lints the Dockerfile for the rules roomcast's image relies on. No package
# registry our machines reach provides hadolint (Debian has none; npm's
# "hadolint" downloads the binary at run time), so .ci/run uses hadolint when
# it is installed and this script otherwise. Checked:
#   - every base image is pinned: a version tag (not latest) or a digest,
#     and the Go builder by its full x.y.z version, no older than go.mod's;
#   - the Go build is scripts/build.sh (run exactly once), which carries
#     CGO_ENABLED=0, -trimpath and the -X main.version stamp, and no other
#     RUN calls go build;
#   - the final stage is distroless static and sets a non-root USER;
#   - no ADD (it fetches URLs and unpacks archives; COPY is explicit);
#   - ENTRYPOINT, CMD and HEALTHCHECK in exec form, ENTRYPOINT ["/roomcast"],
#     a HEALTHCHECK running `/roomcast healthcheck`, WORKDIR absolute;
#   - the port of ENV ROOMCAST_ADDR is EXPOSEd (and is fly.toml's internal_port);
#   - .dockerignore excludes .git and keeps every file the build needs.
#
# Usage: scripts/lint-dockerfile.sh [DOCKERFILE]   (exit 1 on any problem)
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-Dockerfile}
[ -f "$file" ] || { echo "$file: not found" >&2; exit 1; }

fail=0
problem() { echo "$file: $*" >&2; fail=1; }

# Logical lines: comments and blank lines dropped, continuations joined.
mapfile -t lines < <(awk '
  /^[[:space:]]*#/ { next }
  { sub(/[[:space:]]+$/, "") }
  /\\$/ { buf = buf substr($0, 1, length($0) - 1) " "; next }
  { line = buf $0; buf = "" }
  line ~ /^[[:space:]]*$/ { next }
  { sub(/^[[:space:]]+/, "", line); print line }
' "$file")

exec_form() { [[ $1 =~ ^\[.*\]$ ]]; }

stages=() final_from="" final_user="" entrypoint="" healthcheck="" builds=0 addr_port="" exposed=" "
for line in "${lines[@]}"; do
  kw=${line%%[[:space:]]*}
  kw=${kw^^}
  args=""
  [[ $line == *[[:space:]]* ]] && args=${line#*[[:space:]]}
  args=${args#"${args%%[![:space:]]*}"}
  case $kw in
  FROM)
    read -r -a words <<<"$args"
    img="" alias=""
    for ((i = 0; i < ${#words[@]}; i++)); do
      w=${words[i]}
      if [[ $w == --* ]]; then continue; fi
      if [[ ${w^^} == AS ]]; then alias=${words[i + 1]:-}; break; fi
      [ -z "$img" ] && img=$w
    done
    known_stage=0
    for s in "${stages[@]}"; do [[ ${s,,} == "${img,,}" ]] && known_stage=1; done
    if [ "$known_stage" = 0 ] && [ "$img" != scratch ]; then
      name=${img%@*} tag=""
      last=${name##*/}
      [[ $last == *:* ]] && tag=${last##*:}
      if [[ $img != *@sha256:* ]] && { [ -z "$tag" ] || [ "$tag" = latest ]; }; then
        problem "FROM $img: pin the image by a version tag or digest, not latest"
      fi
      if [[ $last == golang* ]]; then
        if ! [[ $tag =~ ^([0-9]+\.[0-9]+\.[0-9]+) ]]; then
          problem "FROM $img: pin the Go builder by its full x.y.z version"
        else
          # The image sets GOTOOLCHAIN=local: a go.mod asking for a newer Go fails the build.
          builder_go=${BASH_REMATCH[1]}
          mod_go=$(sed -n 's/^go \([0-9.]*\).*/\1/p' go.mod)
          if [ -n "$mod_go" ] && [ "$(printf '%s\n' "$mod_go" "$builder_go" | sort -V | tail -n1)" != "$builder_go" ]; then
            problem "FROM $img: go.mod needs Go $mod_go, newer than the builder's $builder_go"
          fi
        fi
      fi
    fi
    [ -n "$alias" ] && stages+=("$alias")
    final_from=$img final_user="" entrypoint="" healthcheck=""
    ;;
  USER) final_user=$args ;;
  ADD) problem "ADD $args: use COPY (ADD fetches URLs and unpacks archives)" ;;
  ENTRYPOINT)
    exec_form "$args" || problem "ENTRYPOINT $args: use the exec form [\"...\"] so that the binary gets SIGTERM"
    entrypoint=$args
    ;;
  CMD) exec_form "$args" || problem "CMD $args: use the exec form [\"...\"]" ;;
  HEALTHCHECK)
    healthcheck=$args
    if [[ $args == *CMD* ]]; then
      hc=${args#*CMD}
      hc=${hc#"${hc%%[![:space:]]*}"}
      exec_form "$hc" || problem "HEALTHCHECK CMD $hc: use the exec form (the final image has no shell)"
    fi
    ;;
  RUN)
    if [[ $args == *scripts/build.sh* ]]; then
      builds=$((builds + 1))
    elif [[ $args == *"go build"* ]]; then
      problem "RUN $args: build with scripts/build.sh, the line .ci/run also runs"
    fi
    ;;
  WORKDIR) [[ $args == /* || $args == \$* ]] || problem "WORKDIR $args: use an absolute path" ;;
  ENV)
    if [[ $args =~ ROOMCAST_ADDR[=[:space:]]+\"?[^[:space:]\"]*:([0-9]+) ]]; then
      addr_port=${BASH_REMATCH[1]}
    fi
    ;;
  EXPOSE)
    for p in $args; do exposed+="${p%/tcp} "; done
    ;;
  esac
done

[[ $final_from == gcr.io/distroless/static* ]] ||
  problem "final stage FROM $final_from: use gcr.io/distroless/static (static binary, no shell)"
case ${final_user%%:*} in
"") problem "final stage: set USER to a non-root user (nonroot:nonroot)" ;;
root | 0) problem "final stage: USER $final_user runs as root" ;;
esac
[ "$builds" = 1 ] || problem "scripts/build.sh must be RUN exactly once (found $builds)"
[[ $entrypoint == '["/roomcast"'* ]] || problem "final stage: ENTRYPOINT must be [\"/roomcast\"], the image's only process"
[[ $healthcheck =~ \"/roomcast\",[[:space:]]*\"healthcheck\" ]] ||
  problem "final stage: HEALTHCHECK must run [\"/roomcast\", \"healthcheck\", ...]"
if [ -z "$addr_port" ]; then
  problem "final image: set ENV ROOMCAST_ADDR=:PORT (the default listens on 127.0.0.1 only)"
elif [[ $exposed != *" $addr_port "* ]]; then
  problem "EXPOSE does not list ROOMCAST_ADDR's port $addr_port"
elif [ -f fly.toml ]; then
  fly_port=$(sed -n 's/^[[:space:]]*internal_port[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' fly.toml | head -n1)
  [ "$fly_port" = "$addr_port" ] || problem "fly.toml internal_port ($fly_port) is not ROOMCAST_ADDR's port ($addr_port)"
fi

build=scripts/build.sh
for want in 'CGO_ENABLED=0 go build' '-trimpath' '-X main.version='; do
  grep -qF -- "$want" "$build" || problem "$build: the go build line lacks $want"
done

# .dockerignore, read as Docker does: the last pattern matching a path
# decides, a pattern names a file or a whole directory, **/ matches any
# depth. Bash's * also matches /, so this errs towards reporting.
ignore=.dockerignore
if [ ! -f "$ignore" ]; then
  problem "no $ignore: the whole repository, .git included, would be sent to the builder"
else
  mapfile -t patterns < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$ignore")
  ignored() {
    local path=$1 out=1 pat neg p
    for pat in "${patterns[@]}"; do
      neg=0
      [[ $pat == !* ]] && neg=1 pat=${pat#!}
      pat=${pat#/}
      for p in "$pat" "${pat#\*\*/}"; do
        # shellcheck disable=SC2053 # $p is a pattern
        if [[ $path == $p || $path == $p/* ]]; then
          out=$neg
          break
        fi
      done
    done
    return "$out"
  }
  ignored .git || problem "$ignore: exclude .git"
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t needed < <(git ls-files --cached --others --exclude-standard -- go.mod go.sum scripts/build.sh '*.go' 'web/*' | grep -v '_test\.go$')
  else
    mapfile -t needed < <(find . -type f \( -name '*.go' ! -name '*_test.go' -o -path ./go.mod -o -path ./go.sum -o -path ./scripts/build.sh -o -path './web/*' \) | sed 's|^\./||')
  fi
  while IFS= read -r p; do
    if ignored "$p"; then problem "$ignore excludes $p, which the build needs"; fi
  done < <(printf '%s\n' go.mod go.sum scripts/build.sh "${needed[@]}" | sort -u)
fi

if [ "$fail" = 0 ]; then echo "$file: ok"; fi
exit "$fail"
