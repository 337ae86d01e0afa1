#!/usr/bin/env bash
# Builds (and removes) the self-contained test/demo topology: network
# namespaces with addresses from 198.18.0.0/15 only and no route out.
#
#   topology.sh up   ID MODE [SERVER_CMD]   # MODE: nat | dr
#   topology.sh down ID
#
#   ns ${ID}c  client     c0 198.18.1.1/24 ──── dpc  ┐ ns ${ID}d: sluiced's ports
#                         c1 198.18.2.1/24 ─┐  dpb  ┘   (af_packet on dpc, dpb)
#   ns ${ID}s  switch     bridge br0 ───────┴── dpb's peer, b1..b3's peers, c1's peer
#   ns ${ID}b1..b3        eth0 198.18.2.11..13/24
#
# The VIP 198.18.100.1 is routed by the client via sluiced's client port
# (198.18.1.254). NAT: backends route via sluiced's backend port
# (198.18.2.254), so replies come back through it. DR: backends hold the VIP
# on lo (arp_ignore/arp_announce so they never answer ARP for it) and reply
# straight to the client through its second leg c1.
set -euo pipefail

VIP=198.18.100.1
cmd=${1:?usage: topology.sh up|down ID [MODE]}
id=${2:?ID missing}
mode=${3:-nat}

ns_exec() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Checksums are computed in software on every leg, and no segmentation or
# receive coalescing, so that af_packet sees real, MTU-sized frames with
# correct checksums and the receiving kernels verify every checksum.
no_offload() { ns_exec "$1" ethtool -K "$2" rx off tx off tso off gso off gro off >/dev/null 2>&1 || true; }

down() {
    for ns in "${id}c" "${id}d" "${id}s" "${id}b1" "${id}b2" "${id}b3"; do
        if ip netns list | grep -qw "$ns"; then
            # Kill whatever still runs inside, then delete.
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
}

up() {
    down
    for ns in "${id}c" "${id}d" "${id}s" "${id}b1" "${id}b2" "${id}b3"; do
        ip netns add "$ns"
        ns_exec "$ns" ip link set lo up
        ns_exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    done
    # client <-> dispatcher client port
    ip link add c0 netns "${id}c" type veth peer name dpc netns "${id}d"
    # dispatcher backend port <-> switch
    ip link add dpb netns "${id}d" type veth peer name swd netns "${id}s"
    # client's second leg (DR return path) <-> switch
    ip link add c1 netns "${id}c" type veth peer name swc netns "${id}s"
    ns_exec "${id}s" ip link add br0 type bridge
    ns_exec "${id}s" ip link set br0 up
    for i in 1 2 3; do
        ip link add eth0 netns "${id}b$i" type veth peer name "swb$i" netns "${id}s"
        ns_exec "${id}s" ip link set "swb$i" master br0 up
        no_offload "${id}s" "swb$i"
    done
    for dev in swd swc; do
        ns_exec "${id}s" ip link set "$dev" master br0 up
        no_offload "${id}s" "$dev"
    done
    for dev in dpc dpb; do
        ns_exec "${id}d" ip link set "$dev" up
        no_offload "${id}d" "$dev"
    done

    ns_exec "${id}c" ip addr add 198.18.1.1/24 dev c0
    ns_exec "${id}c" ip addr add 198.18.2.1/24 dev c1
    ns_exec "${id}c" ip link set c0 up
    ns_exec "${id}c" ip link set c1 up
    no_offload "${id}c" c0
    no_offload "${id}c" c1
    ns_exec "${id}c" ip route add "$VIP/32" via 198.18.1.254 dev c0
    # DR replies arrive on c1 from the VIP, which is routed via c0.
    for k in all default c0 c1; do ns_exec "${id}c" sysctl -qw "net.ipv4.conf.$k.rp_filter=0"; done

    for i in 1 2 3; do
        ns="${id}b$i"
        ns_exec "$ns" ip addr add "198.18.2.1$i/24" dev eth0
        ns_exec "$ns" ip link set eth0 up
        no_offload "$ns" eth0
        if [ "$mode" = dr ]; then
            ns_exec "$ns" ip addr add "$VIP/32" dev lo
            ns_exec "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1
            ns_exec "$ns" sysctl -qw net.ipv4.conf.all.arp_announce=2
            ns_exec "$ns" ip route add default via 198.18.2.1 dev eth0
        else
            ns_exec "$ns" ip route add default via 198.18.2.254 dev eth0
        fi
    done
}

case "$cmd" in
    up) up ;;
    down) down ;;
    *) echo "usage: topology.sh up|down ID [nat|dr]" >&2; exit 2 ;;
esac
