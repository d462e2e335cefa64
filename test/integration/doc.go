// Package integration holds tests that run more than one service in one
// process, on one embedded etcd and loopback sockets: what a service's own
// tests cannot cover without importing another service.
package integration
