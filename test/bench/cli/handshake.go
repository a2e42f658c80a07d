package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"syscall"
	"time"
)

// inprocConns is -conns.
var inprocConns int

// handshakes times, in this process, what one CLI invocation's connection
// costs: a new transport per request (as a new process has), a GET of
// /v1/version over a full TLS handshake, then over a resumed one (a session
// cache shared across the transports, as the CLI's file cache is across
// processes). It reports wall time and this process's CPU time per
// request: the client's side of the handshake.
func handshakes(url, caFile string, n int) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	get := func(cache tls.ClientSessionCache) (bool, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, ClientSessionCache: cache}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(url + "/v1/version")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.TLS.DidResume, nil
	}
	for _, kind := range []string{"full", "resumed", "full", "resumed"} {
		var cache tls.ClientSessionCache
		if kind == "resumed" {
			cache = tls.NewLRUClientSessionCache(4)
			if _, err := get(cache); err != nil { // take the first ticket
				return err
			}
		}
		cpu0, t0 := cpuTime(), time.Now()
		resumedN := 0
		for range n {
			r, err := get(cache)
			if err != nil {
				return err
			}
			if r {
				resumedN++
			}
		}
		wall, cpu := time.Since(t0), cpuTime()-cpu0
		fmt.Printf("in-process GET /v1/version, new transport each, %-7s handshake: wall %.2f ms, client CPU %.2f ms per request (%d of %d resumed)\n",
			kind, ms(wall/time.Duration(n)), ms(cpu/time.Duration(n)), resumedN, n)
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
