// A real Go file server for benches/sendfile.rs (server kind go-real): each accepted
// connection gets the whole file with io.Copy(conn, file), which Go turns into
// sendfile(2) on its netpoller (net.TCPConn.ReadFrom -> poll.SendFile). It speaks the
// bench's child protocol: prints "listening ADDR", serves --clients connections, prints
// "done cpu=... csw=...", then exits when its stdin closes.
//
//	go build -o /tmp/go_sendfile_server benches/support/go_sendfile_server.go
//	cargo bench --bench sendfile -- --servers go-real,uring --go-server /tmp/go_sendfile_server
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
)

func usage() (float64, int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	secs := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return secs(ru.Utime) + secs(ru.Stime), ru.Nvcsw + ru.Nivcsw
}

func main() {
	var path string
	n := 0
	args := os.Args[1:]
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "--serve": // the kind; this binary serves only one
		case "--file":
			path = args[i+1]
		case "--clients":
			v, err := strconv.Atoi(args[i+1])
			if err != nil {
				panic(err)
			}
			n = v
		default:
			fmt.Fprintf(os.Stderr, "unknown argument %q\n", args[i])
			os.Exit(2)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	cpu0, csw0 := usage()
	done := make(chan error, n)
	for i := 0; i < n; i++ {
		c, err := ln.Accept()
		if err != nil {
			panic(err)
		}
		go func(c net.Conn) {
			defer c.Close()
			f, err := os.Open(path)
			if err != nil {
				done <- err
				return
			}
			defer f.Close()
			_, err = io.Copy(c, f)
			done <- err
		}(c)
	}
	for i := 0; i < n; i++ {
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
	}
	cpu1, csw1 := usage()
	fmt.Printf("done cpu=%.6f csw=%d stall_us=-1 busy_us=-1 sleeps=-1 stats=\n", cpu1-cpu0, csw1-csw0)
	io.Copy(io.Discard, os.Stdin)
}
