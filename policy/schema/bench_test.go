package schema

import (
	"testing"
)

var benchSubscribe = []byte(`{"op":"subscribe","id":1,"topic":"news.europe","userId":"42","token":"` + tok + `"}`)

// BenchmarkCheckSubscribe is the bar: size and depth scan, schema verdict
// and decode of one subscribe message (≤ 10 µs, ≤ 10 allocations).
func BenchmarkCheckSubscribe(b *testing.B) {
	v := newValidator(b, Limits{})
	b.ReportAllocs()
	b.SetBytes(int64(len(benchSubscribe)))
	for b.Loop() {
		if _, vio := v.Check(benchSubscribe); vio != nil {
			b.Fatal(vio)
		}
	}
}

// BenchmarkCheckSubscribeSchemaPath is the same message through the schema
// library alone: what the fast path saves.
func BenchmarkCheckSubscribeSchemaPath(b *testing.B) {
	v := newValidator(b, Limits{})
	b.ReportAllocs()
	for b.Loop() {
		if _, vio := v.schemaOnly(benchSubscribe); vio != nil {
			b.Fatal(vio)
		}
	}
}

// BenchmarkCheckRefused is a refused subscribe (bad topic), which always
// takes the schema path to word its violation.
func BenchmarkCheckRefused(b *testing.B) {
	v := newValidator(b, Limits{})
	raw := []byte(`{"op":"subscribe","id":1,"topic":"news..europe","userId":"42","token":"` + tok + `"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, vio := v.Check(raw); vio == nil {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkCheckPublish is a publish with a small object as data.
func BenchmarkCheckPublish(b *testing.B) {
	v := newValidator(b, Limits{})
	raw := []byte(`{"op":"publish","id":3,"topic":"chat.lobby","data":{"text":"hello there","from":"42","n":[1,2,3]}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, vio := v.Check(raw); vio != nil {
			b.Fatal(vio)
		}
	}
}
