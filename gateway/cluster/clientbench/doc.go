// Package clientbench measures the two Go Redis clients considered for the
// cluster's fan-out path, go-redis and rueidis, on what the broker does:
// batches of PUBLISH to a topic channel, received by a subscriber node.
// It is a module of its own so that the gateway's module does not depend
// on the client it does not use. Run:
//
//	cd gateway/cluster/clientbench && go test -bench . -benchmem
//
// The numbers are in docs/CLUSTER.md.
package clientbench
