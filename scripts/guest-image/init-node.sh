#!/bin/sh
# /init of the zcswitch "node" test guest (build-node.sh): busybox-static as
# PID 1, Node and the built project under /opt/zcswitch. It loads no virtio
# module, so the virtio-net PCI device stays free for the user-space guest
# driver, runs one `zcswitch vm` command from the kernel command line,
# prints its output and result on the serial console and powers off.
#
# Kernel command-line parameters:
#   zc.vm=--mode,gen,--count,1000   the arguments after `zcswitch vm --pci`,
#                                   comma separated (the command line has no quoting)
#   zc.timeout=300                  watchdog: power off after this many seconds
#   zc.debug=1                      dump the kernel log and lspci-like facts first
#
# Every line meant for the host starts with "ZC " (as in init.sh):
#   ZC READY node=<version>        about to start the driver
#   ZC VM <line>                   a line the driver printed (stdout or stderr)
#   ZC RESULT vm ok|fail exit=<status>
#   ZC ERROR <what>
#   ZC DONE
export PATH=/bin
mount -t devtmpfs dev /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp

ZC_vm= ZC_timeout=300 ZC_debug=0
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
  echo "ZC DONE"
  poweroff -f
}

( sleep "$ZC_timeout"; echo "ZC ERROR watchdog: still running after ${ZC_timeout}s"; poweroff -f ) &

if [ "$ZC_debug" = 1 ]; then
  dmesg | tail -20
  for d in /sys/bus/pci/devices/*; do echo "ZC PCI ${d##*/} $(cat "$d/vendor") $(cat "$d/device")"; done
fi
[ -n "$ZC_vm" ] || { echo "ZC ERROR no zc.vm= on the kernel command line"; finish; }
echo "ZC READY node=$(/usr/bin/node --version 2>&1)"
# The driver's exit status travels through a file: the pipe's status is the reader's.
( /usr/bin/node /opt/zcswitch/dist/src/cli/main.js vm --pci $(echo "$ZC_vm" | tr ',' ' ') 2>&1; echo $? >/tmp/rc ) |
  while IFS= read -r line; do echo "ZC VM $line"; done
rc="$(cat /tmp/rc 2>/dev/null)"
if [ "$rc" = 0 ]; then r=ok; else r=fail; fi
echo "ZC RESULT vm $r exit=${rc:-none}"
finish
