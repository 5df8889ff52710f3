#!/usr/bin/env bash
# Regenerates the seed corpora in corpus/<target>/: small images made by
# qcrash and by qemu-img (512-byte and 4 KiB clusters, a few KiB each), a few
# hand-damaged copies, operation trailers, write logs and crash-state ids.
# Regression inputs (corpus/<target>/regress-*) are never touched.
#
#   fuzz/make_seeds.sh [QCRASH_BINARY]   (default: build/fuzzreg/qcrash)
set -euo pipefail
cd "$(dirname "$0")/.."
qcrash=${1:-build/fuzzreg/qcrash}
[ -x "$qcrash" ] || { echo "make_seeds.sh: no qcrash binary at $qcrash" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "make_seeds.sh: qemu-img missing" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
img="$work/img"
mkdir -p "$img"

# ---- images -------------------------------------------------------------------
q() { qemu-img "$@" >/dev/null; }
qio() { qemu-io "$@" >/dev/null; }

"$qcrash" create -q -o cluster_size=512 "$img/qcrash-512-empty.qcow2" 1M
"$qcrash" create -q -o cluster_size=512 "$img/qcrash-512-data.qcow2" 1M
"$qcrash" io -c "write -P 0xaa 0 1536" -c "write -z 4096 1024" -c "write -P 0x55 65536 512" \
  -c "discard 512 512" "$img/qcrash-512-data.qcow2" >/dev/null
"$qcrash" create -q -o cluster_size=1024,refcount_bits=1 "$img/qcrash-1k-rc1.qcow2" 256K
"$qcrash" io -c "write -P 0x11 0 4096" -c "write -P 0x22 131072 1024" "$img/qcrash-1k-rc1.qcow2" >/dev/null
"$qcrash" create -q -o cluster_size=512,compat=0.10 "$img/qcrash-512-v2.qcow2" 128K
"$qcrash" io -c "write -P 0x33 1024 2048" "$img/qcrash-512-v2.qcow2" >/dev/null
"$qcrash" create -q -o cluster_size=512,lazy_refcounts=on "$img/qcrash-512-lazy.qcow2" 256K
"$qcrash" io --policy lazy -c "write -P 0x44 0 4096" "$img/qcrash-512-lazy.qcow2" >/dev/null

q create -f qcow2 -o cluster_size=512 "$img/qemu-512-empty.qcow2" 1M
q create -f qcow2 -o cluster_size=512 "$img/qemu-512-data.qcow2" 1M
qio -f qcow2 -c "write -P 0xcc 0 2048" -c "write -z 8192 4096" -c "discard 1024 512" "$img/qemu-512-data.qcow2"
q create -f qcow2 -o cluster_size=1024,refcount_bits=64 "$img/qemu-1k-rc64.qcow2" 512K
qio -f qcow2 -c "write -P 0xdd 4096 2048" "$img/qemu-1k-rc64.qcow2"
q create -f qcow2 -o cluster_size=512,compat=0.10 "$img/qemu-512-v2.qcow2" 64K
qio -f qcow2 -c "write -P 0xee 0 1024" "$img/qemu-512-v2.qcow2"
q create -f qcow2 -o cluster_size=512 "$img/qemu-512-snapshot.qcow2" 64K
qio -f qcow2 -c "write -P 0x10 0 1024" "$img/qemu-512-snapshot.qcow2"
q snapshot -c snap1 "$img/qemu-512-snapshot.qcow2"
qio -f qcow2 -c "write -P 0x20 512 1024" "$img/qemu-512-snapshot.qcow2"
q create -f qcow2 -o cluster_size=1024 "$img/qemu-1k-bitmap.qcow2" 256K
q bitmap --add -g 65536 "$img/qemu-1k-bitmap.qcow2" b0
qio -f qcow2 -c "write -P 0x30 0 2048" "$img/qemu-1k-bitmap.qcow2"
for _ in $(seq 64); do printf 'compressible data, cluster one. '; done > "$work/raw.bin"
q convert -c -f raw -O qcow2 -o cluster_size=1024 "$work/raw.bin" "$img/qemu-1k-compressed.qcow2"
q convert -c -f raw -O qcow2 -o cluster_size=1024,compression_type=zstd "$work/raw.bin" \
  "$img/qemu-1k-compressed-zstd.qcow2"
"$qcrash" create -q -o cluster_size=512,compression_type=zstd "$img/qcrash-512-compressed-zstd.qcow2" 64K
"$qcrash" io -c "write -c -P 0x61 0 4096" -c "write -P 0x62 1024 512" -c "discard 2048 512" \
  -c "write -c -P 0x63 8192 1024" "$img/qcrash-512-compressed-zstd.qcow2" >/dev/null
q create -f qcow2 -o cluster_size=512 -u -b base.raw -F raw "$img/qemu-512-backing.qcow2" 64K
# Extended L2 entries (16-byte L2 entries, 32 subclusters of 512 bytes).
q create -f qcow2 -o cluster_size=16k,extended_l2=on "$img/qemu-16k-subclusters.qcow2" 256K
qio -f qcow2 -c "write -P 0x61 0 1536" -c "write -z 1024 512" -c "write -P 0x62 20480 4096" \
  -c "discard 16384 4096" "$img/qemu-16k-subclusters.qcow2"
q create -f qcow2 -o cluster_size=16k,extended_l2=on -u -b base.raw -F raw \
  "$img/qemu-16k-subclusters-backing.qcow2" 128K
"$qcrash" create -q -o cluster_size=16k,extended_l2=on "$img/qcrash-16k-subclusters.qcow2" 256K
"$qcrash" io -c "write -P 0x64 0 2560" -c "write -z 2048 1024" -c "discard 16384 16384" \
  -c "write -P 0x65 33280 700" "$img/qcrash-16k-subclusters.qcow2" >/dev/null
# External data files (incompatible bit 2, extension 0x44415441; raw: autoclear bit 1).
q create -f qcow2 -o cluster_size=512,data_file=qemu-512-datafile.data "$img/qemu-512-datafile.qcow2" 64K
qio -f qcow2 -c "write -P 0x50 0 2048" -c "write -z 4096 512" "$img/qemu-512-datafile.qcow2"
q create -f qcow2 -o cluster_size=512,data_file=qemu-512-datafile-raw.data,data_file_raw=on \
  "$img/qemu-512-datafile-raw.qcow2" 16K

# Several snapshots and bitmaps, for snapshot_fuzzer and bitmap_fuzzer (v2
# and resized images end the file inside the unpadded snapshot table).
snap="$work/snap"
mkdir -p "$snap"
q create -f qcow2 -o cluster_size=512 "$snap/qemu-512-snapshots3.qcow2" 64K
qio -f qcow2 -c "write -P 0x10 0 1024" "$snap/qemu-512-snapshots3.qcow2"
q snapshot -c snap1 "$snap/qemu-512-snapshots3.qcow2"
qio -f qcow2 -c "write -P 0x20 512 1024" "$snap/qemu-512-snapshots3.qcow2"
q snapshot -c snap2 "$snap/qemu-512-snapshots3.qcow2"
qio -f qcow2 -c "write -P 0x30 8192 512" "$snap/qemu-512-snapshots3.qcow2"
q snapshot -c third-snapshot "$snap/qemu-512-snapshots3.qcow2"
q snapshot -d snap2 "$snap/qemu-512-snapshots3.qcow2"
q create -f qcow2 -o cluster_size=512,compat=0.10 "$snap/qemu-512-snapshots-v2.qcow2" 64K
qio -f qcow2 -c "write -P 0x11 0 512" "$snap/qemu-512-snapshots-v2.qcow2"
q snapshot -c a "$snap/qemu-512-snapshots-v2.qcow2"
qio -f qcow2 -c "write -P 0x12 0 512" "$snap/qemu-512-snapshots-v2.qcow2"
q snapshot -c b "$snap/qemu-512-snapshots-v2.qcow2"
q create -f qcow2 -o cluster_size=512,refcount_bits=2 "$snap/qemu-512-snapshots-resize.qcow2" 32K
qio -f qcow2 -c "write -P 0x13 0 512" "$snap/qemu-512-snapshots-resize.qcow2"
q snapshot -c small "$snap/qemu-512-snapshots-resize.qcow2"
q resize "$snap/qemu-512-snapshots-resize.qcow2" 96K
qio -f qcow2 -c "write -P 0x14 65536 512" "$snap/qemu-512-snapshots-resize.qcow2"
q snapshot -c big "$snap/qemu-512-snapshots-resize.qcow2"
q create -f qcow2 -o cluster_size=512 "$snap/qemu-512-bitmaps3.qcow2" 64K
q bitmap --add -g 512 "$snap/qemu-512-bitmaps3.qcow2" fine
q bitmap --add -g 65536 "$snap/qemu-512-bitmaps3.qcow2" coarse
q bitmap --add -g 4096 --disable "$snap/qemu-512-bitmaps3.qcow2" off
qio -f qcow2 -c "write -P 0x40 0 2048" -c "write -P 0x41 40960 512" "$snap/qemu-512-bitmaps3.qcow2"
q create -f qcow2 -o cluster_size=512 "$snap/qemu-512-bitmap-snapshot.qcow2" 64K
q bitmap --add -g 1024 "$snap/qemu-512-bitmap-snapshot.qcow2" tracked
qio -f qcow2 -c "write -P 0x50 4096 1024" "$snap/qemu-512-bitmap-snapshot.qcow2"
q snapshot -c withbitmap "$snap/qemu-512-bitmap-snapshot.qcow2"
qio -f qcow2 -c "write -P 0x51 0 512" "$snap/qemu-512-bitmap-snapshot.qcow2"

# Hand-damaged copies of one qcrash image (offsets of a 512-byte-cluster
# image: L1 at the cluster the header names, and so on).
damage() {  # damage NAME OFFSET HEXBYTES
  cp "$img/qcrash-512-data.qcow2" "$img/damaged-$1.qcow2"
  printf "$3" | dd of="$img/damaged-$1.qcow2" bs=1 seek="$2" conv=notrunc status=none
}
l1=$(od -An -tu8 --endian=big -j 40 -N 8 "$img/qcrash-512-data.qcow2" | tr -d ' ')
rt=$(od -An -tu8 --endian=big -j 48 -N 8 "$img/qcrash-512-data.qcow2" | tr -d ' ')
damage l1-misaligned "$((l1 + 6))" '\x10\x01'
damage l1-into-header "$l1" '\x80\x00\x00\x00\x00\x00\x00\x00'
damage rt-zero "$rt" '\x00\x00\x00\x00\x00\x00\x00\x00'
damage dirty-bit 79 '\x01'
damage corrupt-bit 79 '\x02'
damage unknown-incompat 72 '\x00\x00\x00\x00\x00\x01\x00\x00'
damage huge-size 24 '\x00\x7f\xff\xff\xff\xff\xff\x00'

# ---- per target ---------------------------------------------------------------
for target in header_fuzzer read_fuzzer check_fuzzer repair_fuzzer write_fuzzer; do
  mkdir -p "corpus/$target"
  find "corpus/$target" -maxdepth 1 -name 'seed-*' -delete
done
for f in "$img"/*.qcow2; do
  name=$(basename "$f" .qcow2)
  for target in read_fuzzer check_fuzzer repair_fuzzer; do cp "$f" "corpus/$target/seed-$name"; done
  # The header target only sees cluster 0.
  head -c 4096 "$f" > "corpus/header_fuzzer/seed-$name"
  # write_fuzzer: the image, then 4 operation records and their count.
  { cat "$f"
    printf '\x00\x00\x00\x00\x04\x02\x00\xab'   # write 0x200 bytes at 1 * 512 (aligned to 512)
    printf '\x00\x00\x00\x00\x22\x20\x00\x5a'   # write, cluster-aligned offset
    printf '\x03\x00\x00\x00\x01\x04\x00\x00'   # discard
    printf '\x04\x00\x00\x00\x00\x00\x00\x00'   # flush
    printf '\x04'; } > "corpus/write_fuzzer/seed-$name"
done

# snapshot_fuzzer and bitmap_fuzzer: the images with their structure (and
# the plain snapshot and bitmap seeds above).
for target in snapshot_fuzzer bitmap_fuzzer; do
  mkdir -p "corpus/$target"
  find "corpus/$target" -maxdepth 1 -name 'seed-*' -delete
done
for f in "$snap"/*snapshot*.qcow2 "$img/qemu-512-snapshot.qcow2"; do
  cp "$f" "corpus/snapshot_fuzzer/seed-$(basename "$f" .qcow2)"
done
for f in "$snap"/*bitmap*.qcow2 "$img/qemu-1k-bitmap.qcow2"; do
  cp "$f" "corpus/bitmap_fuzzer/seed-$(basename "$f" .qcow2)"
done

# write_log_fuzzer: logs in the compact format of sim/write_log.h.
mkdir -p corpus/write_log_fuzzer
find corpus/write_log_fuzzer -maxdepth 1 -name 'seed-*' -delete
python3 - corpus/write_log_fuzzer <<'PY'
import struct, sys
out = sys.argv[1]
def log(records, sector=512, initial=0):
    b = b"QCRWLOG1" + struct.pack("<IIQQ", sector, 0, initial, len(records))
    for kind, off, data in records:
        b += struct.pack("<BQQ", kind, off, len(data)) + data
    return b
seeds = {
    "empty": log([]),
    "write-flush": log([(1, 0, b"A" * 1024), (3, 0, b""), (1, 512, b"B" * 512)], initial=4096),
    "fua-resize": log([(1, 0, b"C" * 512), (2, 1024, b"D" * 512), (4, 8192, b""), (1, 4096, b"E" * 100)]),
    "sector4k": log([(1, 100, b"F" * 5000), (1, 0, b"G" * 4096)], sector=4096, initial=8192),
}
for name, data in seeds.items():
    open(f"{out}/seed-{name}", "wb").write(data)
PY

# dm_log_fuzzer: dm-log-writes logs, from qemu-io over blklogwrites (a
# 512-byte-cluster image keeps them small) and one built by hand with every
# flag (mark, FUA, discard, preflush + FUA).
mkdir -p corpus/dm_log_fuzzer
find corpus/dm_log_fuzzer -maxdepth 1 -name 'seed-*' -delete
for cache in writeback unsafe; do
  qemu-img create -q -f qcow2 -o cluster_size=512 "$work/dm.qcow2" 64K
  : >"$work/dm.log"
  qemu-io -t "$cache" --image-opts -c "write -P 0x11 0 1024" -c flush -c "write -z 2048 512" \
    -c "discard 0 512" -c "write -P 0x22 700 100" \
    "driver=qcow2,file.driver=blklogwrites,file.file.filename=$work/dm.qcow2,file.log.filename=$work/dm.log,file.log-sector-size=512,file.log-super-update-interval=1" >/dev/null
  cp "$work/dm.log" "corpus/dm_log_fuzzer/seed-qemu-$cache"
done
python3 - corpus/dm_log_fuzzer <<'PY'
import struct, sys
out = sys.argv[1]
def log(entries, sector=512):
    b = struct.pack("<QQQI", 0x6a736677736872, 1, len(entries), sector).ljust(sector, b"\0")
    for first, sectors, flags, fill, mark in entries:
        b += (struct.pack("<QQQQ", first, sectors, flags, len(mark)) + mark).ljust(sector, b"\0")
        if not flags & (4 | 8):
            b += bytes([fill]) * (sectors * sector)
    return b
seeds = {
    "flags": log([(2, 1, 0, 0xab, b""), (0, 0, 1, 0, b""), (0, 0, 8, 0, b"op 1"),
                  (4, 2, 2, 0xcd, b""), (8, 1, 4, 0, b""), (6, 1, 3, 0xee, b"")]),
    "sector4k": log([(1, 1, 0, 0x33, b""), (0, 0, 1, 0, b"")], sector=4096),
}
for name, data in seeds.items():
    open(f"{out}/seed-{name}", "wb").write(data)
PY

# journal_fuzzer: mode byte, then a location payload, a journal header
# block or a descriptor block taken from a journal-policy image.
"$qcrash" create -q -o cluster_size=1024 "$work/journal.qcow2" 256K
"$qcrash" io --policy journal -c "write -P 0x11 0 4096" -c "write -P 0x22 65536 1024" "$work/journal.qcow2" >/dev/null
mkdir -p corpus/journal_fuzzer
find corpus/journal_fuzzer -maxdepth 1 -name 'seed-*' -delete
python3 - "$work/journal.qcow2" corpus/journal_fuzzer <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
out = sys.argv[2]
header_at = d.find(b"qjournal")
off, location = struct.unpack(">I", d[100:104])[0], None
while off + 8 <= 1024:
    t, l = struct.unpack(">II", d[off:off + 8])
    if t == 0:
        break
    if t == 0x716A726E:
        location = d[off + 8:off + 8 + l]
    off += 8 + (l + 7) // 8 * 8
open(f"{out}/seed-location", "wb").write(bytes([0, 1]) + struct.pack(">I", len(d)) + location)
open(f"{out}/seed-header", "wb").write(bytes([1]) + struct.pack(">I", 1 << 20) + d[header_at:header_at + 512])
desc = header_at + 512
open(f"{out}/seed-descriptor", "wb").write(bytes([2]) + struct.pack(">H", 1) + d[desc:desc + 512])
PY

# crash_id_fuzzer: ids and enumerator specs.
mkdir -p corpus/crash_id_fuzzer
find corpus/crash_id_fuzzer -maxdepth 1 -name 'seed-*' -delete
i=0
for text in p0 p12:40=0,41=2 p5:1=1,2=0 p7:7=0/2@256 p9:3=g prefix drop-one tear-one bounded:2 \
            exhaustive:1024 random:42:100 bounded:1@0/4 random:1:10@3/8 data:65536; do
  printf '%s' "$text" > "corpus/crash_id_fuzzer/seed-$i"; i=$((i + 1))
done

# workload_crash_fuzzer: policy, format, journal variant, size, op count,
# ops (kind, u16 sector, u8 length), crash point, per-sector choices; the
# layout is in fuzz/workload.h. The canary has no seeds (ci/fuzz-smoke.sh
# makes it find its bug from nothing); its corpus/canary_fuzzer/crashes/
# holds inputs that must keep failing.
mkdir -p corpus/workload_crash_fuzzer
find corpus/workload_crash_fuzzer -maxdepth 1 -name 'seed-*' -delete
python3 - <<'PY'
import struct
WRITE, ZERO, ZERO_UNMAP, DISCARD, FLUSH, RESIZE, CLOSE = 0, 1, 2, 3, 4, 6, 7
WRITETHROUGH, ORDERED, LAZY, EXTENT, JOURNAL = range(5)
RING_64K = 3 << 5  # journal byte bits 5-6: 4k, 8k, 16k, 64k
def case(policy, fmt, size, ops, journal=RING_64K, point=0xffff, choices=b""):
    b = bytes([policy, fmt, journal, size, len(ops)])
    for kind, sector, length in ops:
        b += bytes([kind]) + struct.pack(">H", sector) + bytes([length])
    return b + struct.pack(">Q", point) + choices
# format byte: bits 0-2 cluster bits - 9, bit 3 v2, bits 4-6 refcount order
C512, C1K, C4K, C64K, V2 = 0, 1, 3, 7, 8
alloc = [(WRITE, 0, 4), (FLUSH, 0, 0), (WRITE, 8, 8), (WRITE, 64, 2), (FLUSH, 0, 0),
         (ZERO_UNMAP, 8, 8), (DISCARD, 0, 1), (WRITE, 200, 3)]
# Kevin's revoke scenario (2013): the L1 grows, the old L1 is freed and
# reused for guest data; with 512-byte clusters a resize by 255 clusters
# grows the L1 of a 16-cluster disk.
revoke = [(WRITE, 0, 1), (FLUSH, 0, 0), (RESIZE, 255, 0), (WRITE, 40, 1), (FLUSH, 0, 0),
          (WRITE, 300, 2), (FLUSH, 0, 0)]
seeds = {
    # The layout before issue 13, re-expressed (same options and operations).
    "ordered-alloc": case(ORDERED, C512, 20, alloc),
    "writethrough-4k": case(WRITETHROUGH, C4K, 10, alloc[:5]),
    "lazy-512": case(LAZY, C512, 8, alloc, choices=bytes([0, 1] * 16)),
    "extent-1k": case(EXTENT, C1K, 12, alloc, point=3),
    "ordered-v2": case(ORDERED, C512 | V2, 16, alloc[:4], choices=bytes([0] * 8)),
    "ordered-64k": case(ORDERED, C64K, 2, [(WRITE, 0, 200), (FLUSH, 0, 0), (WRITE, 300, 5)]),
    "journal-1k": case(JOURNAL, C1K, 12, alloc, choices=bytes([1, 0] * 16)),
    "journal-4k": case(JOURNAL, C4K, 6, alloc[:5]),
    # What the layout reaches now: journal variants, resizes, close, other
    # cluster sizes, refcount widths, caches and 4096-byte sectors.
    "journal-descriptor-escape-8k": case(JOURNAL, C1K, 12, alloc, journal=0x01 | 0x04 | 1 << 5),
    "journal-scan-bytesum-16k": case(JOURNAL, C4K, 8, alloc, journal=0x02 | 1 << 3 | 2 << 5),
    "journal-unchecksummed-16k": case(JOURNAL, C512, 12, alloc[:5], journal=2 << 3 | 2 << 5),
    "journal-revoke-512": case(JOURNAL, C512, 12, revoke),
    "ordered-revoke-512": case(ORDERED, C512, 12, revoke, choices=bytes([0, 1, 1] * 8)),
    "lazy-resize-close-2k": case(LAZY | 3 << 3 | 3 << 5, 2, 6,
                                 alloc[:3] + [(RESIZE, 7, 0), (WRITE, 90, 6), (CLOSE, 0, 0),
                                              (WRITE, 4, 2)]),
    "extent-sector4096-8k": case(EXTENT | 0x80, 4 | 5 << 4, 5, alloc),
    "writethrough-refcount64-32k": case(WRITETHROUGH | 1 << 3, 6 | 6 << 4, 4, alloc, point=7),
    # A flush with bit 3 is a snapshot operation (create, delete, revert).
    "ordered-snapshots-4k": bytes.fromhex(
        "0143000806000000" "0f0c000000000400" "070c000002000800" "030c000001280000"
        "0000000000000000" "0000000000000000" "0000000000"),
    # A close with bit 3 is a bitmap operation: add (4 KiB granules), a
    # close that stores it, a rewrite in place, clear, more writes.
    "ordered-bitmaps-4k": case(ORDERED, C4K | 4 << 4, 8,
                               [(WRITE, 0, 8), (CLOSE | 8, 2, 0), (CLOSE, 0, 0), (WRITE, 0, 2),
                                (CLOSE | 8, 0, 2), (WRITE, 16, 4), (FLUSH, 0, 0), (CLOSE, 0, 0)]),
}
for name, data in seeds.items():
    open(f"corpus/workload_crash_fuzzer/seed-{name}", "wb").write(data)
PY
echo "make_seeds.sh: seeds written"; du -sh corpus/* | sort -k2
