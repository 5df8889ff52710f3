#!/usr/bin/env python3
"""Writes a valid qcow2 v3 image whose allocated clusters are scattered over
the guest disk, without writing guest data: data clusters are holes in a
sparse file, so a 4 GiB allocation takes a fraction of a second to build.

usage: make_scattered_qcow2.py OUT VIRTUAL_BYTES ALLOCATED_BYTES [SEED]
Layout (64 KiB clusters, 16-bit refcounts): header | refcount table |
refcount blocks | L1 | L2 tables | data clusters in random guest order.
qemu-img check finds it clean (the bench checks that before timing).
"""
import random
import struct
import sys

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
COPIED = 1 << 63


def main():
    out, virtual, allocated = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    guest_clusters = virtual // CLUSTER
    data_clusters = allocated // CLUSTER
    l2_entries = CLUSTER // 8
    l1_size = (guest_clusters + l2_entries - 1) // l2_entries
    chosen = random.Random(seed).sample(range(guest_clusters), data_clusters)
    used_l2 = sorted({g // l2_entries for g in chosen})

    per_block = CLUSTER * 8 // 16
    l1_clusters = (l1_size * 8 + CLUSTER - 1) // CLUSTER
    # Refcount blocks and table must also cover themselves: iterate to a fixed point.
    blocks, table_clusters = 1, 1
    while True:
        total = 1 + table_clusters + blocks + l1_clusters + len(used_l2) + data_clusters
        need_blocks = (total + per_block - 1) // per_block
        need_table = (need_blocks * 8 + CLUSTER - 1) // CLUSTER
        if need_blocks == blocks and need_table == table_clusters:
            break
        blocks, table_clusters = need_blocks, need_table
    table_at = 1
    blocks_at = table_at + table_clusters
    l1_at = blocks_at + blocks
    l2_at = l1_at + l1_clusters
    data_at = l2_at + len(used_l2)
    total = data_at + data_clusters

    with open(out, "wb") as f:
        header = struct.pack(">IIQIIQIIQQIIQQQQII", 0x514649FB, 3, 0, 0, CLUSTER_BITS, virtual, 0,
                             l1_size, l1_at * CLUSTER, table_at * CLUSTER, table_clusters, 0, 0,
                             0, 0, 0, 4, 112)
        f.write(header + bytes(112 - len(header)) + struct.pack(">II", 0, 0))
        table = b"".join(struct.pack(">Q", (blocks_at + i) * CLUSTER) for i in range(blocks))
        f.seek(table_at * CLUSTER)
        f.write(table)
        refcounts = bytearray(blocks * CLUSTER)
        for c in range(total):
            struct.pack_into(">H", refcounts, c * 2, 1)
        f.seek(blocks_at * CLUSTER)
        f.write(refcounts)
        l1 = bytearray(l1_clusters * CLUSTER)
        for k, index in enumerate(used_l2):
            struct.pack_into(">Q", l1, index * 8, COPIED | (l2_at + k) * CLUSTER)
        f.seek(l1_at * CLUSTER)
        f.write(l1)
        l2 = bytearray(len(used_l2) * CLUSTER)
        slot = {index: k for k, index in enumerate(used_l2)}
        for host, guest in enumerate(chosen):
            table_index, entry = divmod(guest, l2_entries)
            struct.pack_into(">Q", l2, (slot[table_index] * l2_entries + entry) * 8,
                             COPIED | (data_at + host) * CLUSTER)
        f.seek(l2_at * CLUSTER)
        f.write(l2)
        f.truncate(total * CLUSTER)


if __name__ == "__main__":
    main()
