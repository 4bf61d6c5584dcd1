// goverify gives Go's crypto/x509 verdict on certificate chains, the way crypto/tls calls
// it on both sides of a mutual TLS handshake (the server: KeyUsages clientAuth; the client:
// DNSName = the dialed host, KeyUsages default serverAuth). It reads the case table that
// test/peers/hostile_certs.py prints (stdin) and prints one JSON verdict per case (stdout).
package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
)

type testCase struct {
	Name    string `json:"name"`
	Roots   string `json:"roots"`
	Chain   string `json:"chain"`
	Purpose string `json:"purpose"`
	Host    string `json:"host"`
}

type verdict struct {
	Name    string `json:"name"`
	Purpose string `json:"purpose"`
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
}

func readCerts(path string) ([]*x509.Certificate, []error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, []error{err}
	}
	var certs []*x509.Certificate
	var errs []error
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return certs, errs
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		certs = append(certs, cert)
	}
}

func verify(c testCase) verdict {
	out := verdict{Name: c.Name, Purpose: c.Purpose}
	roots := x509.NewCertPool()
	// As x509.CertPool.AppendCertsFromPEM: a certificate that does not parse is skipped.
	rootCerts, _ := readCerts(c.Roots)
	for _, r := range rootCerts {
		roots.AddCert(r)
	}
	chain, errs := readCerts(c.Chain)
	if len(errs) > 0 {
		// crypto/tls refuses the handshake when any presented certificate fails to parse
		out.Error = errs[0].Error()
		return out
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
	for _, ic := range chain[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if c.Purpose == "client" {
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		opts.DNSName = c.Host
	}
	if _, err := chain[0].Verify(opts); err != nil {
		out.Error = err.Error()
		return out
	}
	out.OK = true
	return out
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "goverify: reading the case table:", err)
		os.Exit(2)
	}
	verdicts := make([]verdict, 0, len(cases))
	for _, c := range cases {
		verdicts = append(verdicts, verify(c))
	}
	if err := json.NewEncoder(os.Stdout).Encode(verdicts); err != nil {
		os.Exit(2)
	}
}
