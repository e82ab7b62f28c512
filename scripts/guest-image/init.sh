#!/bin/sh
# /init of the zcswitch test guest (busybox-static, PID 1). Loads the
# virtio-net modules, configures eth0 from the kernel command line, runs the
# requested roles, prints results on the serial console and powers off.
#
# Kernel command-line parameters (all optional except zc.ip):
#   zc.ip=10.0.0.1/24    address of eth0
#   zc.role=ping,tcp-send  roles, run in order (comma-separated):
#       ping      wait until zc.peer answers, then ping it zc.count times
#       tcp-send  send zc.kib KiB of random data to zc.peer:zc.port (nc)
#       tcp-recv  receive one TCP stream on zc.port
#       wait      stay up until "stop" is typed on the console (the kernel
#                 answers pings meanwhile; "echo" is another name for it)
#   zc.peer=10.0.0.2  zc.count=3  zc.size=56  zc.port=5000  zc.kib=1024
#   zc.timeout=90     watchdog: power off after this many seconds no matter what
#   zc.debug=1        dump the kernel log before powering off
#   zc.halt=reboot    reboot instead of powering off at the end (without
#                     QEMU's -no-reboot the guest then boots again: a device
#                     reset while the vhost-user connection stays up)
#
# Every line meant for the host starts with "ZC ":
#   ZC READY mac=<mac> ip=<ip>
#   ZC RESULT <role> ok|fail key=value...
#   ZC WAITING            (role wait: ready for "stop")
#   ZC ERROR <what>
#   ZC DONE
export PATH=/bin
mount -t devtmpfs dev /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp

ZC_ip= ZC_role= ZC_peer= ZC_count=3 ZC_size=56 ZC_port=5000 ZC_kib=1024 ZC_timeout=90 ZC_debug=0 ZC_halt=poweroff
for a in $(cat /proc/cmdline); do
  case "$a" in
    zc.*=*)
      k="${a%%=*}"; k="${k#zc.}"; v="${a#*=}"
      case "$k" in *[!a-z0-9_]*|'') continue ;; esac
      eval "ZC_$k=\$v"
      ;;
  esac
done

finish() {
  [ "$ZC_debug" = 1 ] && dmesg
  echo "ZC DONE"
  [ "$ZC_halt" = reboot ] || poweroff -f
  reboot -f
}
error() {
  echo "ZC ERROR $*"
  finish
}

( sleep "$ZC_timeout"; echo "ZC ERROR watchdog: still running after ${ZC_timeout}s"; poweroff -f; reboot -f ) &

for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || error "insmod $m failed"
done
i=0
while [ ! -e /sys/class/net/eth0 ]; do
  i=$((i + 1))
  [ $i -gt 100 ] && error "no eth0 after loading virtio_net"
  usleep 50000
done
[ -n "$ZC_ip" ] || error "no zc.ip= on the kernel command line"
ip link set lo up
ip addr add "$ZC_ip" dev eth0 || error "ip addr add $ZC_ip failed"
ip link set eth0 up || error "ip link set eth0 up failed"
echo "ZC READY mac=$(cat /sys/class/net/eth0/address) ip=$ZC_ip mtu=$(cat /sys/class/net/eth0/mtu)"

# Seconds since boot (integer).
now() { read -r up _ </proc/uptime; echo "${up%.*}"; }
deadline=$(( $(now) + ZC_timeout - 5 ))

role_ping() {
  [ -n "$ZC_peer" ] || { echo "ZC RESULT ping fail reason=no-zc.peer"; return; }
  until ping -c 1 -W 1 -q "$ZC_peer" >/dev/null 2>&1; do
    [ "$(now)" -ge "$deadline" ] && { echo "ZC RESULT ping fail peer=$ZC_peer reason=unreachable"; return; }
  done
  out="$(ping -c "$ZC_count" -s "$ZC_size" -i 0.2 -W 2 -q "$ZC_peer" 2>&1)"
  sent="$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')"
  recv="$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')"
  if [ -n "$sent" ] && [ "$sent" = "$recv" ]; then r=ok; else r=fail; fi
  echo "ZC RESULT ping $r peer=$ZC_peer size=$ZC_size sent=${sent:-0} recv=${recv:-0}"
}

role_tcp_send() {
  dd if=/dev/urandom of=/tmp/data bs=1024 count="$ZC_kib" 2>/dev/null
  sum="$(md5sum /tmp/data)"; sum="${sum%% *}"
  bytes="$(wc -c </tmp/data)"
  echo "ZC SENDING bytes=$bytes md5=$sum to=$ZC_peer:$ZC_port"
  until nc -w 2 "$ZC_peer" "$ZC_port" </tmp/data; do
    [ "$(now)" -ge "$deadline" ] && { echo "ZC RESULT tcp-send fail reason=cannot-connect"; return; }
    usleep 200000
  done
  echo "ZC RESULT tcp-send ok bytes=$bytes md5=$sum"
}

role_tcp_recv() {
  # nc -l would half-close when its stdin ends and cut the stream short:
  # give it a stdin that stays open (a fifo we hold) until it is done.
  mkfifo /tmp/hold
  nc -l -p "$ZC_port" </tmp/hold >/tmp/recv &
  pid=$!
  exec 3>/tmp/hold
  echo "ZC LISTENING port=$ZC_port"
  wait $pid
  rc=$?
  exec 3>&-
  rm -f /tmp/hold
  sum="$(md5sum /tmp/recv)"; sum="${sum%% *}"
  bytes="$(wc -c </tmp/recv)"
  if [ $rc = 0 ]; then r=ok; else r=fail; fi
  echo "ZC RESULT tcp-recv $r bytes=$bytes md5=$sum"
}

role_wait() {
  echo "ZC WAITING"
  while [ "$(now)" -lt "$deadline" ]; do
    if read -r -t 1 line; then
      case "$line" in *stop*) echo "ZC RESULT wait ok"; return ;; esac
    fi
  done
  echo "ZC RESULT wait fail reason=no-stop"
}

for r in $(echo "$ZC_role" | tr ',' ' '); do
  case "$r" in
    ping) role_ping ;;
    tcp-send) role_tcp_send ;;
    tcp-recv) role_tcp_recv ;;
    wait|echo) role_wait ;;
    *) echo "ZC ERROR unknown role $r" ;;
  esac
done
finish
