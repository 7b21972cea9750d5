#!/usr/bin/env bash
# build_standin_base.sh - build a LOCAL STAND-IN for quay.io/jupyterhub/k8s-hub:<TAG>
#
# Usage:  tests/image/build_standin_base.sh TAG CACHE_DIR [SUITE]
#   e.g.  tests/image/build_standin_base.sh 4.4.0 /tmp/k8s-hub-standin-cache
#         tests/image/build_standin_base.sh 5.0.0-0.dev.trixie-standin /tmp/cache trixie
#   SUITE: the Debian release under the image, bookworm (default) or trixie.
#
# Why: the template's hub image is built `FROM quay.io/jupyterhub/k8s-hub:<TAG>`,
# but quay.io cannot be reached from the test/CI machines (only the PyPI,
# Debian and npm registries are, through the machine's configured mirrors).
# This script builds an image that mimics the real k8s-hub image closely
# enough for the template's Dockerfile to build on top of it, and stores it in
# buildah's local storage under exactly that name, so that
#     buildah bud --pull=false    (or --pull-never)  -f Dockerfile .
# uses it without touching the network.
#
# What the real k8s-hub 4.4.0 image is (z2jh images/hub/Dockerfile,
# "default-stage"): python:3.12-slim-bookworm + `adduser --uid 1000 jovyan`
# + apt libcurl4 libpq5 sqlite3 tini (+ curl dnsutils git less vim)
# + pip requirements.txt (jupyterhub 5.5.0, kubespawner 7.0.0, ...) + py-spy,
# WORKDIR /srv/jupyterhub (owned by jovyan), USER jovyan, EXPOSE 8081,
# ENTRYPOINT ["tini", "--"],
# CMD ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py"].
#
# The next k8s-hub: Zero to JupyterHub's main branch builds the hub image
# from python:3.14-slim-trixie (Debian 13), whose Node.js is 20, not 18.
# SUITE=trixie builds a stand-in for that one, with the same hub packages.
#
# What the stand-in differs in (honestly):
#   * Python is the Debian release's python3 (bookworm 3.11, trixie 3.13) in
#     /usr, not 3.12/3.14 in /usr/local; /usr/lib/python3.*/EXTERNALLY-MANAGED
#     is diverted away so `pip install` as root works system-wide (into
#     /usr/local) like in the real image. pip is Debian's pip, which leaves
#     Debian's own python3-* packages alone instead of failing to uninstall them.
#   * pycurl comes from Debian's python3-pycurl (no compiler needed), not
#     from a source build against libcurl4-openssl-dev.
#   * Only the hub packages k8s-hub pins by name are installed (jupyterhub,
#     kubespawner, oauthenticator, idle-culler, nativeauthenticator,
#     tmpauthenticator, py-spy); their dependencies are whatever the index
#     resolves today, and the rest of z2jh's requirements.txt (ldap/lti/
#     firstuse/hmac authenticators, psycopg2, pymysql, statsd, ...) is left
#     out. STANDIN_EXTRA_PIP_PACKAGES adds more.
#   * The host's apt, pip and npm registry configuration is copied in (see
#     below) so that `apt-get`, `pip install` and `npm install` in later
#     builds go through the same mirrors as the host.
#   * Labels say it is a stand-in; /etc/k8s-hub-standin/README says so too.
#
# Debian packages this script needs on the host (the CI script installs them,
# this script does not):
#     buildah debootstrap
# (plus coreutils, tar, gzip, gawk/mawk, sed, util-linux for flock/findmnt,
#  all present on any Debian). The host's python3/pip and npm are used, if
#  present, only to read their configuration.
#
# Caching / idempotency:
#   * If the image already exists in buildah's storage: exit 0 at once
#     (STANDIN_FORCE=1 rebuilds it).
#   * CACHE_DIR/rootfs-*.tar.gz: the debootstrap'ed minbase rootfs, reused on
#     every later build (delete it to re-debootstrap).
#   * CACHE_DIR/k8s-hub-<TAG>-<hash>.oci.tar: the finished image; if buildah's
#     storage was wiped, it is re-imported from there in seconds. <hash>
#     covers this script, TAG and the host configuration copied in, so an
#     edit of any of them triggers a real rebuild. STANDIN_CACHE_IMAGE=0
#     disables writing it.
#   * A lock per Debian release (flock on CACHE_DIR/.lock-SUITE) serialises
#     concurrent runs for one release; a bookworm and a trixie build can run
#     side by side.
#
# Storage: buildah's defaults are used (root: /var/lib/containers/storage,
# driver "overlay" with native overlay on ext4/xfs). Where overlay cannot be
# mounted (e.g. nested in a container), run with STORAGE_DRIVER=vfs; buildah
# reads that variable. Use the same driver for this script and the later
# `buildah bud`, since one storage root holds one driver's images.
#
# Environment knobs (all optional):
#   STANDIN_FORCE=1                rebuild even if the image exists
#   STANDIN_CACHE_IMAGE=0          do not keep the finished image in CACHE_DIR
#   STANDIN_DEBIAN_MIRROR=URI      debootstrap mirror (default: read from the
#                                  host's apt sources)
#   STANDIN_EXTRA_PIP_PACKAGES     extra pip requirements for the image
#   STANDIN_EXTRA_APT_PACKAGES     extra Debian packages for the image
#
# NOTE: no registry or mirror host name is written in this file on purpose;
# everything is read from the host's configuration at run time.

set -euo pipefail

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
PROG=${0##*/}

log() { printf '[%s %s] %s\n' "$PROG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,5p' "$SCRIPT_PATH" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

[[ ${1:-} == -h || ${1:-} == --help ]] && usage 0
[[ $# -eq 2 || $# -eq 3 ]] || usage 2

TAG=$1
CACHE_DIR=$2
# k8s-hub 4.x is built from python:3.12-slim-bookworm; the next one from
# python:3.14-slim-trixie.
SUITE=${3:-bookworm}
[[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid image tag: $TAG"
[[ $SUITE == bookworm || $SUITE == trixie ]] || die "SUITE must be bookworm or trixie, not: $SUITE"
IMAGE="quay.io/jupyterhub/k8s-hub:${TAG}"

# ---------------------------------------------------------------------------
# What goes into the image. Pins are those of k8s-hub 4.4.0 (z2jh
# images/hub/requirements.txt), on either Debian release: the generated
# requirements.txt is written for them. Note the PyPI names: the
# authenticators are published as jupyterhub-nativeauthenticator /
# jupyterhub-tmpauthenticator.
# ---------------------------------------------------------------------------
if [[ $TAG != 4.4.0 ]]; then
    log "note: package pins are those of k8s-hub 4.4.0; using them for $TAG ($SUITE)"
fi
PIP_PACKAGES=(
    jupyterhub==5.5.0
    jupyterhub-kubespawner==7.0.0
    oauthenticator==17.4.0
    jupyterhub-idle-culler==1.4.0
    jupyterhub-nativeauthenticator==1.3.0
    jupyterhub-tmpauthenticator==1.0.0
    py-spy            # default (non-slim) k8s-hub image adds it
)
# shellcheck disable=SC2206  # word splitting of the knob is intended
PIP_PACKAGES+=(${STANDIN_EXTRA_PIP_PACKAGES:-})

APT_PACKAGES=(
    # Python (bookworm: 3.11) with pip; python-is-python3 gives `python`
    python3 python3-pip python-is-python3
    # pycurl without a compiler (see header)
    python3-pycurl
    # the real image's runtime packages
    libcurl4 libpq5 sqlite3 tini ca-certificates
    # the default (non-slim) k8s-hub image's extras
    curl dnsutils git less vim
)
# shellcheck disable=SC2206
APT_PACKAGES+=(${STANDIN_EXTRA_APT_PACKAGES:-})

# ---------------------------------------------------------------------------
# Fast path: the image is already there.
# ---------------------------------------------------------------------------
command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"

image_exists() { buildah inspect --type image "$IMAGE" >/dev/null 2>&1; }

if [[ ${STANDIN_FORCE:-0} != 1 ]] && image_exists; then
    log "$IMAGE already in buildah storage; nothing to do"
    exit 0
fi

for cmd in debootstrap tar gzip sha256sum flock awk sed findmnt; do
    command -v "$cmd" >/dev/null || die "$cmd not found (see the package list at the top)"
done
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, buildah chroot isolation)"

mkdir -p "$CACHE_DIR"
CACHE_DIR=$(readlink -f "$CACHE_DIR")

# Serialise concurrent runs sharing a cache dir (and then re-check).
exec 9>"$CACHE_DIR/.lock-$SUITE"
flock 9
if [[ ${STANDIN_FORCE:-0} != 1 ]] && image_exists; then
    log "$IMAGE appeared while waiting for the lock; nothing to do"
    exit 0
fi

# ---------------------------------------------------------------------------
# Temporary state and cleanup (also on failure).
# ---------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/k8s-hub-standin.XXXXXX")
CTR=""

unmount_below() {
    # Unmount anything (debootstrap's /proc, /sys, ...) still mounted below
    # $1, deepest first, so that the rm -rf below can never reach the host.
    local dir=$1 mnt
    findmnt -rn -o TARGET 2>/dev/null | awk -v d="$dir/" 'index($0, d) == 1' |
        sort -r | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
}

cleanup() {
    local rc=$?
    if [[ -n $CTR ]]; then buildah rm "$CTR" >/dev/null 2>&1 || true; fi
    unmount_below "$WORK"
    rm -rf --one-file-system "$WORK"
    if [[ $rc -ne 0 ]]; then log "FAILED (exit $rc)"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

OVERLAY=$WORK/overlay          # files copied into the image's /
mkdir -p "$OVERLAY/etc/apt/sources.list.d" "$OVERLAY/etc/apt/apt.conf.d" \
    "$OVERLAY/etc/k8s-hub-standin"
STANDIN_DIR=/etc/k8s-hub-standin   # in-image home of copied certificates

# ===========================================================================
# 1. Read the host's apt configuration.
# ===========================================================================
HOST_CODENAME=$( . /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}" ) || true
HOST_CODENAME=${HOST_CODENAME:-$SUITE}

# Print the first http(s)/file URI of a "deb" source for suite $1, from the
# deb822 files (*.sources) first, then from the one-line format (*.list).
find_mirror() {
    local cn=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk -v cn="$cn" '
            function flush(   n, i, u) {
                if (!found && (" " types " ") ~ / deb / && enabled != "no" &&
                    (" " suites " ") ~ (" " cn " ")) {
                    n = split(uris, u, /[ \t]+/)
                    for (i = 1; i <= n; i++)
                        if (u[i] ~ /^(https?|file):/) { print u[i]; found = 1; break }
                }
                types = uris = suites = enabled = cur = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/   {   # continuation line of a multi-line field
                if (cur == "uris") uris = uris " " $0
                else if (cur == "suites") suites = suites " " $0
                next
            }
            /^[A-Za-z-]+:/ {
                cur = tolower($0); sub(/:.*/, "", cur)
                val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (cur == "types") types = val
                else if (cur == "uris") uris = val
                else if (cur == "suites") suites = val
                else if (cur == "enabled") enabled = tolower(val)
            }
            END { flush() }
        ' "$f" | head -n1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        awk -v cn="$cn" '
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == cn && $i ~ /^(https?|file):/) { print $i; exit }
            }' "$f"
    done
}

MIRROR=${STANDIN_DEBIAN_MIRROR:-}
if [[ -z $MIRROR ]]; then
    MIRROR=$(find_mirror "$HOST_CODENAME" | head -n1)
fi
[[ -n $MIRROR ]] || die "no Debian mirror for '$HOST_CODENAME' in the host's apt sources; set STANDIN_DEBIAN_MIRROR"
log "Debian mirror (from host apt sources): $MIRROR"

# Copy the host's sources into the image. If the host's release is not
# SUITE, its codename (also in the -updates/-security suite names) is
# rewritten to SUITE: the same mirror serves both (checked by debootstrap
# and apt-get below, which fail otherwise). \< \> are word boundaries, so
# "bookworm bookworm-updates" becomes "trixie trixie-updates".
copy_source_file() {
    local src=$1 dst=$2
    if [[ $HOST_CODENAME != "$SUITE" ]]; then
        sed -E "s/\\<${HOST_CODENAME}\\>/${SUITE}/g" "$src" >"$dst"
    else
        cp "$src" "$dst"
    fi
}
n_sources=0
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    copy_source_file "$f" "$OVERLAY$f"
    n_sources=$((n_sources + 1))
    # Keyrings named by Signed-By / signed-by= that the image would not have.
    # (Debian's own archive keyring comes with the debian-archive-keyring
    # package debootstrap installs.)
    for key in $(sed -nE -e 's/^[[:space:]]*Signed-By:[[:space:]]*(\/[^[:space:]]+).*/\1/p' \
                         -e 's/.*signed-by=(\/[^] ,]+).*/\1/p' "$f"); do
        case $key in /usr/share/keyrings/debian-archive-*) continue ;; esac
        if [[ -r $key ]]; then
            mkdir -p "$OVERLAY$(dirname "$key")"
            cp "$key" "$OVERLAY$key"
        fi
    done
done
[[ $n_sources -gt 0 ]] || die "no apt sources found on the host"
# The debootstrap'ed /etc/apt/sources.list must not shadow the copied ones.
[[ -e $OVERLAY/etc/apt/sources.list ]] || : >"$OVERLAY/etc/apt/sources.list"

# apt.conf(.d) snippets that shape how the mirror is reached (Acquire::...:
# proxies, Check-Valid-Until for snapshot mirrors, ...). Snippets with
# *-Invoke hooks are skipped: they call programs the image does not have.
[[ -r /etc/apt/apt.conf ]] && cp /etc/apt/apt.conf "$OVERLAY/etc/apt/apt.conf"
for f in /etc/apt/apt.conf.d/*; do
    [[ -f $f && -r $f ]] || continue
    if grep -q 'Acquire::' "$f" && ! grep -q 'Invoke' "$f"; then
        cp "$f" "$OVERLAY/etc/apt/apt.conf.d/"
    fi
done
# Mirror credentials, if the host has any, so that apt works the same.
if compgen -G '/etc/apt/auth.conf.d/*' >/dev/null; then
    mkdir -p "$OVERLAY/etc/apt/auth.conf.d"
    cp /etc/apt/auth.conf.d/* "$OVERLAY/etc/apt/auth.conf.d/"
    chmod 600 "$OVERLAY"/etc/apt/auth.conf.d/*
fi
# Extra CA certificates of the host (e.g. of an intercepting proxy); the
# ca-certificates package picks them up when it is installed in the image.
if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
    mkdir -p "$OVERLAY/usr/local/share/ca-certificates"
    cp -r /usr/local/share/ca-certificates/. "$OVERLAY/usr/local/share/ca-certificates/"
fi

# ===========================================================================
# 2. Read the host's pip configuration -> the image's /etc/pip.conf.
# ===========================================================================
# `pip config list` prints the merged configuration of all pip config files
# plus PIP_* environment variables (as ":env:.name='value'"). Without a pip
# on the host, only the PIP_* variables are used.
pip_config_list() {
    local p
    for p in pip pip3; do
        if command -v "$p" >/dev/null && (cd / && "$p" config list) 2>/dev/null; then return 0; fi
    done
    if command -v python3 >/dev/null && (cd / && python3 -m pip config list) 2>/dev/null; then
        return 0
    fi
    log "no pip on the host; using only PIP_* environment variables"
    local var name
    while IFS='=' read -r var _; do
        [[ $var == PIP_* ]] || continue
        name=${var#PIP_}; name=${name,,}; name=${name//_/-}
        printf ":env:.%s='%s'\n" "$name" "${!var}"
    done < <(env)
}

# Options worth passing on; anything else (constraint files, log paths,
# target dirs, ...) refers to the host's file system and is dropped.
declare -A PIP_KEEP=(
    [index-url]=url [extra-index-url]=urls [find-links]=urls
    [cert]=file [client-cert]=file
    [trusted-host]=1 [timeout]=1 [default-timeout]=1 [retries]=1 [proxy]=1
    [disable-pip-version-check]=1 [prefer-binary]=1 [only-binary]=1
    [no-binary]=1 [pre]=1 [progress-bar]=1 [no-input]=1 [keyring-provider]=1
)
TAB=$'\t'
declare -A PIPCONF=()     # "section<TAB>name" -> value

# Only http(s) URLs survive: file:// indexes and local find-links dirs of
# the host do not exist in the image.
only_http() {
    local tok out=()
    for tok in $1; do [[ $tok =~ ^https?:// ]] && out+=("$tok"); done
    echo "${out[*]:-}"
}

pip_set() {   # section name value
    local sec=$1 name=$2 val=$3 kind=${PIP_KEEP[$2]:-}
    if [[ -z $kind ]]; then
        log "pip config: dropping host-only setting $name"
        return 0
    fi
    case $kind in
        url | urls)
            val=$(only_http "$val")
            if [[ -z $val ]]; then
                log "pip config: dropping $name (only local file paths/URLs)"
                unset "PIPCONF[${sec}${TAB}${name}]"
                return 0
            fi ;;
        file)
            if [[ ! -r $val ]]; then
                log "pip config: dropping $name ($val not readable)"
                return 0
            fi
            cp "$val" "$OVERLAY$STANDIN_DIR/pip-$name.pem"
            val=$STANDIN_DIR/pip-$name.pem ;;
    esac
    PIPCONF["${sec}${TAB}${name}"]=$val
}

# File settings first, then the environment, which takes precedence.
PIP_LIST=$(pip_config_list || true)
for pass in files env; do
    while IFS= read -r line; do
        [[ $line == *=* ]] || continue
        key=${line%%=*}; val=${line#*=}
        # values are printed as Python reprs: strip the quotes, turn \n into
        # spaces (multi-line extra-index-url / find-links)
        if [[ $val =~ ^\'(.*)\'$ || $val =~ ^\"(.*)\"$ ]]; then val=${BASH_REMATCH[1]}; fi
        val=${val//\\n/ }
        sec=${key%.*}; name=${key##*.}
        if [[ $sec == ":env:" ]]; then
            [[ $pass == env ]] || continue
            sec=global
        else
            [[ $pass == files ]] || continue
        fi
        pip_set "$sec" "$name" "$val"
    done <<<"$PIP_LIST"
done

{
    echo "# Generated by build_standin_base.sh from the build host's pip"
    echo "# configuration (local file:// indexes and host-only paths dropped)."
    for sec in $(printf '%s\n' "${!PIPCONF[@]}" | cut -f1 | sort -u); do
        echo "[$sec]"
        for k in $(printf '%s\n' "${!PIPCONF[@]}" | awk -F'\t' -v s="$sec" '$1 == s {print $2}' | sort); do
            echo "$k = ${PIPCONF["${sec}${TAB}${k}"]}"
        done
    done
} >"$OVERLAY/etc/pip.conf"
log "pip.conf for the image: $(grep -v '^#' "$OVERLAY/etc/pip.conf" | tr '\n' ' ')"

# ===========================================================================
# 3. Read the host's npm registry configuration -> the image's /etc/npmrc.
#    (NPM_CONFIG_GLOBALCONFIG=/etc/npmrc in the image env makes every npm use
#    it, whether from Debian's nodejs or a node installed under /usr/local.)
# ===========================================================================
npm_get() {   # effective value of npm setting $1 on the host, or empty
    local key=$1 v="" var f
    if command -v npm >/dev/null; then
        v=$(cd / && npm config get "$key" 2>/dev/null || true)
        [[ $v == null || $v == undefined ]] && v=""
    else
        var=npm_config_${key//-/_}
        for f in "$var" "${var^^}"; do [[ -n ${!f:-} ]] && { v=${!f}; break; }; done
        if [[ -z $v ]]; then
            for f in "$HOME/.npmrc" /etc/npmrc /usr/local/etc/npmrc; do
                [[ -r $f ]] || continue
                v=$(sed -nE "s/^[[:space:]]*${key}[[:space:]]*=[[:space:]]*(.*)\$/\\1/p" "$f" | tail -n1)
                [[ -n $v ]] && break
            done
        fi
    fi
    printf '%s' "$v"
}
{
    echo "# Generated by build_standin_base.sh from the build host's npm configuration."
    for key in registry strict-ssl proxy https-proxy noproxy; do
        v=$(npm_get "$key")
        [[ -n $v ]] && echo "$key=$v"
    done
    cafile=$(npm_get cafile)
    if [[ -n $cafile && -r $cafile ]]; then
        cp "$cafile" "$OVERLAY$STANDIN_DIR/npm-cafile.pem"
        echo "cafile=$STANDIN_DIR/npm-cafile.pem"
    fi
    # scoped registries (@scope:registry=...) from the user/global npmrc files
    npm_global=""
    command -v npm >/dev/null && npm_global=$(cd / && npm config get globalconfig 2>/dev/null || true)
    for f in "$HOME/.npmrc" /etc/npmrc "$npm_global"; do
        [[ -n $f && -r $f ]] && grep -hE '^[[:space:]]*@[^:=[:space:]]+:registry[[:space:]]*=' "$f" || true
    done | sort -u
} >"$OVERLAY/etc/npmrc"
log "npmrc for the image: $(grep -v '^#' "$OVERLAY/etc/npmrc" | tr '\n' ' ')"

# Files that buildah's RUN mounts over (it would otherwise create them as
# empty 0755 files in the image) and a debian:*-slim style dpkg filter (the
# real image's base, python:3.12-slim-bookworm, has the same) to keep docs,
# man pages and translations out of the image.
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$OVERLAY/etc/hosts"
: >"$OVERLAY/etc/resolv.conf"
echo localhost >"$OVERLAY/etc/hostname"
mkdir -p "$OVERLAY/etc/dpkg/dpkg.cfg.d"
cat >"$OVERLAY/etc/dpkg/dpkg.cfg.d/standin-slim" <<'EOF_DPKG'
# like debian:*-slim (debuerreotype --slimify)
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF_DPKG

# Marker so that the stand-in is recognisable from inside, too.
cat >"$OVERLAY$STANDIN_DIR/README" <<EOF
This is a LOCAL STAND-IN for $IMAGE, built by build_standin_base.sh
(Debian $SUITE debootstrap + Debian python3, hub packages from pip).
It is not the image published on quay.io.
pip packages requested: ${PIP_PACKAGES[*]}
EOF

# ===========================================================================
# 4. The finished image cached in CACHE_DIR? Import it and stop.
# ===========================================================================
RECIPE_HASH=$(
    {
        sha256sum "$SCRIPT_PATH"
        echo "$TAG ${PIP_PACKAGES[*]} / ${APT_PACKAGES[*]}"
        (cd "$OVERLAY" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -c1-16
)
IMAGE_ARCHIVE=$CACHE_DIR/k8s-hub-$TAG-$RECIPE_HASH.oci.tar

if [[ ${STANDIN_FORCE:-0} != 1 && -s $IMAGE_ARCHIVE ]]; then
    log "importing cached image $IMAGE_ARCHIVE"
    if id=$(buildah pull --quiet "oci-archive:$IMAGE_ARCHIVE") && buildah tag "$id" "$IMAGE"; then
        log "done: $IMAGE (from cache)"
        exit 0
    fi
    log "cached image unusable; rebuilding"
    rm -f "$IMAGE_ARCHIVE"
fi

# ===========================================================================
# 5. The debootstrap rootfs tarball (cached in CACHE_DIR).
# ===========================================================================
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
# ca-certificates is included so that apt works with https mirrors too.
DEBOOTSTRAP_ARGS=(--variant=minbase --arch="$ARCH" --include=ca-certificates "$SUITE")
ROOTFS_KEY=$(echo "${DEBOOTSTRAP_ARGS[*]} v1" | sha256sum | cut -c1-12)
ROOTFS_TAR=$CACHE_DIR/rootfs-$SUITE-minbase-$ARCH-$ROOTFS_KEY.tar.gz

if [[ -s $ROOTFS_TAR ]]; then
    log "using cached rootfs $ROOTFS_TAR"
else
    log "debootstrap ${DEBOOTSTRAP_ARGS[*]} (a few minutes)"
    ROOTFS=$WORK/rootfs
    if ! debootstrap "${DEBOOTSTRAP_ARGS[@]}" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 40 "$WORK/debootstrap.log" >&2
        [[ -r $ROOTFS/debootstrap/debootstrap.log ]] && tail -n 40 "$ROOTFS/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    unmount_below "$ROOTFS"
    # Strip host specifics and caches: debootstrap copies the host's
    # resolv.conf and hostname (buildah provides its own at run time; keep
    # empty files as mount points like container base images do).
    : >"$ROOTFS/etc/resolv.conf"
    : >"$ROOTFS/etc/hostname"
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
        "$ROOTFS"/var/log/*.log "$ROOTFS"/debootstrap
    # /dev, /proc, /sys stay empty: the container runtime provides them.
    tmp_tar=$ROOTFS_TAR.tmp.$$
    tar --numeric-owner --xattrs --xattrs-include='*' -C "$ROOTFS" \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -czf "$tmp_tar" .
    mv "$tmp_tar" "$ROOTFS_TAR"
    rm -rf --one-file-system "$ROOTFS"
    log "cached rootfs $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
fi

# ===========================================================================
# 6. Build the image with buildah (from scratch, chroot isolation, no daemon).
# ===========================================================================
RUN=(buildah run --isolation chroot)

CTR=$(buildah from --name "k8s-hub-standin-$$" scratch)
log "working container $CTR"
buildah add --quiet "$CTR" "$ROOTFS_TAR" / >/dev/null
buildah copy --quiet "$CTR" "$OVERLAY" / >/dev/null
buildah config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --env DEBIAN_FRONTEND=noninteractive \
    --env PYTHONUNBUFFERED=1 \
    --env NPM_CONFIG_GLOBALCONFIG=/etc/npmrc \
    "$CTR"

log "apt-get: ${APT_PACKAGES[*]}"
"${RUN[@]}" "$CTR" -- /bin/sh -euc '
    chmod 644 /etc/pip.conf /etc/npmrc
    # what the dpkg filter keeps out of new packages, drop from the base too
    find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
    find /usr/share/doc -mindepth 1 -type d -empty -delete
    rm -rf /usr/share/man/* /usr/share/groff/* /usr/share/info/* /usr/share/lintian/*
    find /usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    apt-get update -qq
    apt-get upgrade -y -qq
    apt-get install -y -qq --no-install-recommends "$@"
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/lib/dpkg/*-old
' sh "${APT_PACKAGES[@]}" >"$WORK/apt.log" 2>&1 || { tail -n 40 "$WORK/apt.log" >&2; die "apt-get in the image failed"; }

log "pip: ${PIP_PACKAGES[*]}"
"${RUN[@]}" "$CTR" -- /bin/sh -euc '
    # Let root pip install system-wide (into /usr/local) as in the real
    # image: divert PEP 668 marker files away, so that a later upgrade of
    # the python3.x package does not bring them back.
    for f in /usr/lib/python3*/EXTERNALLY-MANAGED; do
        [ -e "$f" ] || continue
        dpkg-divert --quiet --local --rename --add "$f"
        rm -f "$f.distrib"
    done
    pip install --no-cache-dir --root-user-action=ignore "$@"
    jupyterhub --version
' sh "${PIP_PACKAGES[@]}" >"$WORK/pip.log" 2>&1 || { tail -n 40 "$WORK/pip.log" >&2; die "pip install in the image failed"; }
log "jupyterhub $(tail -n1 "$WORK/pip.log") installed"

# User jovyan (uid 1000, own group jovyan gid 1000, /home/jovyan, bash), as
# the real Dockerfile's `adduser --disabled-password --gecos "Default user"
# --uid 1000 --home /home/jovyan jovyan` makes it (adduser itself is not in
# minbase; useradd gives the same result).
"${RUN[@]}" "$CTR" -- /bin/sh -euc '
    id jovyan >/dev/null 2>&1 ||
        useradd --create-home --home-dir /home/jovyan --shell /bin/bash \
            --uid 1000 --user-group --comment "Default user" jovyan
    mkdir -p /srv/jupyterhub
    chown jovyan:jovyan /srv/jupyterhub
    rm -rf /tmp/* /var/tmp/* /root/.cache
' >/dev/null

buildah config \
    --workingdir /srv/jupyterhub \
    --user jovyan \
    --port 8081 \
    --entrypoint '["tini", "--"]' \
    --cmd '["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py"]' \
    --label "org.opencontainers.image.title=k8s-hub (local stand-in)" \
    --label "org.opencontainers.image.description=local stand-in for $IMAGE built by build_standin_base.sh (Debian $SUITE + Debian python3); not the quay.io image" \
    --label "org.opencontainers.image.version=$TAG" \
    --label "k8s-hub-standin=true" \
    --label "k8s-hub-standin.recipe=$RECIPE_HASH" \
    --label "k8s-hub-standin.suite=$SUITE" \
    "$CTR"

# Replace an older stand-in of the same name (STANDIN_FORCE=1) cleanly.
old_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE" 2>/dev/null || true)
log "committing $IMAGE"
buildah commit --quiet --rm "$CTR" "$IMAGE" >/dev/null
CTR=""
if [[ -n $old_id ]]; then buildah rmi "$old_id" >/dev/null 2>&1 || true; fi

# ===========================================================================
# 7. Keep the finished image in CACHE_DIR for a quick re-import.
# ===========================================================================
if [[ ${STANDIN_CACHE_IMAGE:-1} != 0 ]]; then
    tmp_archive=$IMAGE_ARCHIVE.tmp.$$
    rm -f "$tmp_archive"
    if buildah push --quiet "$IMAGE" "oci-archive:$tmp_archive:$IMAGE" >/dev/null 2>&1; then
        rm -f "$CACHE_DIR/k8s-hub-$TAG-"*.oci.tar   # older recipes
        mv "$tmp_archive" "$IMAGE_ARCHIVE"
        log "cached image $IMAGE_ARCHIVE ($(du -h "$IMAGE_ARCHIVE" | cut -f1))"
    else
        rm -f "$tmp_archive"
        log "WARNING: could not save the image to $IMAGE_ARCHIVE (not fatal)"
    fi
fi

log "done: $IMAGE"
buildah images "$IMAGE" >&2
