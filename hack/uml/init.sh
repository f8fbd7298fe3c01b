#!/bin/sh
# PID 1 of the User-Mode Linux guest of hack/run-in-v2.sh. The kernel command line gives
# PYCRI_UML_RESULT (a host directory holding `cmd`, `cwd` and `checkout`; `rc` is written there)
# as an environment variable. The root is the host's / over hostfs, read-only; this script
# makes the guest: a writable overlay root (tmpfs upper) with pivot_root, the checkout
# read-write over hostfs at its own path, tmpfs on /run /tmp /var/tmp /var/lib/pycri, cgroup2
# with +cpu +io +memory +pids, loopback up; then runs the command with bash -c and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
R=$PYCRI_UML_RESULT

fail() {
    echo "run-in-v2 init: $*" >&2
    busybox poweroff -f
    exit 1
}

mount -t proc proc /proc || fail "mount /proc"
# the staging area: a tmpfs over a directory of the read-only root (hidden again by the pivot)
mount -t tmpfs -o mode=0755 stage /mnt || fail "tmpfs on /mnt"
mkdir -p /mnt/lower /mnt/upper /mnt/work /mnt/root
mount -t hostfs -o / hostroot /mnt/lower || fail "hostfs / on /mnt/lower"
mount -o remount,ro /mnt/lower 2>/dev/null
if ! grep -qw overlay /proc/filesystems; then
    ko=$(find /mnt/lower/usr/lib/uml/modules/"$(uname -r)" -name overlay.ko 2>/dev/null | head -n1)
    [ -n "$ko" ] && busybox insmod "$ko"
fi
mount -t overlay overlay -o lowerdir=/mnt/lower,upperdir=/mnt/upper,workdir=/mnt/work /mnt/root \
    || fail "overlay root"
N=/mnt/root
mkdir -p $N/.oldroot
cd $N || fail "cd $N"
pivot_root . .oldroot || fail "pivot_root"
cd /
umount -l /.oldroot
rmdir /.oldroot 2>/dev/null

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# kernel modules: the UML kernel's, loaded by busybox's modprobe (kmod is not installed here),
# on demand too (the kernel runs /sbin/modprobe)
v=$(uname -r)
if [ -d /usr/lib/uml/modules/$v ] && [ ! -e /lib/modules/$v ]; then
    mkdir -p /lib/modules
    ln -s /usr/lib/uml/modules/$v /lib/modules/$v
fi
[ -e /sbin/modprobe ] || ln -s /usr/bin/busybox /sbin/modprobe
for m in overlay veth bridge br_netfilter iptable_nat iptable_filter iptable_mangle xt_MASQUERADE xt_comment \
         xt_mark xt_multiport xt_addrtype xt_conntrack xt_nat; do
    modprobe $m 2>/dev/null
done
# Debian's UML kernel has no nftables NAT: iptables-legacy (the overlay's /etc only)
if [ -x /usr/sbin/iptables-legacy ]; then
    for t in iptables ip6tables; do
        for s in "" -save -restore; do
            ln -sf /usr/sbin/$t-legacy$s /etc/alternatives/$t$s
        done
    done
fi
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mount -t tmpfs -o mode=0755 dev /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
[ -e /dev/ptmx ] || ln -sf pts/ptmx /dev/ptmx
# what udev/systemd would make: bash's process substitution needs /dev/fd
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
for i in 0:stdin 1:stdout 2:stderr; do
    [ -e /dev/${i#*:} ] || ln -s /proc/self/fd/${i%%:*} /dev/${i#*:}
done
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t mqueue mqueue /dev/mqueue 2>/dev/null
for d in /run /tmp /var/tmp /var/lib/pycri; do
    mkdir -p $d
    mount -t tmpfs -o mode=0755 tmpfs $d || fail "tmpfs on $d"
done
chmod 1777 /tmp /var/tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "cgroup2 on /sys/fs/cgroup"
echo "+cpu +io +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control || fail "cgroup.subtree_control"
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
ip link set lo up

# the result directory, then the checkout, read-write over hostfs
mkdir -p /run/uml-result
mount -t hostfs -o "$R" result /run/uml-result || fail "hostfs $R"
R=/run/uml-result
checkout=$(cat $R/checkout)
mkdir -p "$checkout"  # a checkout under /tmp or /run is under a fresh tmpfs here
mount -t hostfs -o "$checkout" checkout "$checkout" || fail "hostfs $checkout"

cd "$(cat $R/cwd)" 2>/dev/null || cd "$checkout"
bash -c "$(cat $R/cmd)" </dev/null
echo $? > $R/rc.tmp && mv $R/rc.tmp $R/rc
sync
cd /
busybox poweroff -f
