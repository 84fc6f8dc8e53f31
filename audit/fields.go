package audit

import "github.com/portcullis-gw/portcullis/audit/chain"

// The keys of a trail line (docs/AUDIT.md, "A line"), spelled once: the
// writer's formatter writes them, audit/query and the summary rebuild read
// them. The keys sealing and `audit verify` read are package chain's, which
// imports nothing.
const (
	FieldActor         = "actor"
	FieldBoot          = chain.FieldBoot
	FieldCode          = "code"
	FieldConn          = "conn"
	FieldCount         = chain.FieldCount
	FieldCountedPrefix = "counted_prefix"
	FieldDetail        = chain.FieldDetail
	FieldDurationMS    = "duration_ms"
	FieldEvent         = chain.FieldEvent
	FieldFirst         = "first"
	FieldIP            = "ip"
	FieldLast          = "last"
	FieldLevel         = "level"
	FieldMAC           = chain.FieldMAC
	FieldNode          = "node"
	FieldPeerIP        = "peer_ip"
	FieldPrev          = chain.FieldPrev
	FieldProto         = "proto"
	FieldReason        = chain.FieldReason
	FieldRedeemedAgoS  = "redeemed_ago_s"
	FieldRedeemedIP    = "redeemed_ip"
	FieldSeq           = chain.FieldSeq
	FieldSeverity      = "severity"
	FieldStage         = "stage"
	FieldStrikes       = "strikes"
	FieldTime          = chain.FieldTime
	FieldTokenFP       = "token_fp"
	FieldTopic         = "topic"
	FieldUserID        = "userId"
)
