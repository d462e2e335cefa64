// Package session records boot sessions: one machine's attempt to boot, as one W3C
// trace that every service adds its hops to.
//
// The first service that sees a machine opens the session (a root span, stored at
// sessions/<mac> in etcd with a lease TTL); every later step (DHCP, TFTP, script,
// downloads, callbacks) is a Hop: a span that is a child of the session's root and a
// record in etcd, so `bootctl trace <mac>` shows the timeline with no collector.
//
// The session record (the head: trace, state, IP, job) is small and every service
// caches it; each hop is a key of its own under
// sessionhops/<mac>/<trace id>/<start>-<span id>, written blind (no read, no
// compare: the key is unique) in batches, and read back only when someone asks for
// the timeline. Writes are asynchronous: the DHCP and HTTP hot paths never wait.
//
// A service that does not know the MAC finds the session by the machine's
// address (FindByIP, as tftpd does) or by the traceparent a URL carries
// (FromTraceparent, as the artifact store does); both look the value up in an
// index, at a cost that does not grow with the number of sessions.
//
//	s := rec.Open(ctx, mac, session.OpenOptions{IP: ip})
//	ctx, hop := s.StartHop(ctx, "dhcp.discover")
//	defer hop.End()
//
// The package example runs a recorder on an embedded etcd end to end.
package session
