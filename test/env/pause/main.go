// Command pause is the process of every pod sandbox on the test node: it holds the pod's
// namespaces and waits to be stopped. containerd's CRI uses it as `sandbox_image`
// (test/env/test-env.sh), since the node has no registry to pull the usual one from.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// As PID 1 of a shared PID namespace it also inherits orphans: reap them.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGCHLD)
	go func() {
		for {
			var status syscall.WaitStatus
			if _, err := syscall.Wait4(-1, &status, 0, nil); err != nil {
				<-make(chan struct{})
			}
		}
	}()
	<-stop
}
