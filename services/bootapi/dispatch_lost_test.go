package bootapi_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// lossyKV is etcd's KV as a stalled etcd serves it: once armed, the first
// transaction that writes a job is applied but its answer lost (the client's
// deadline passes), and the first read of a job after that times out too.
type lossyKV struct {
	clientv3.KV
	armed, txnLost, getLost atomic.Bool
}

func (k *lossyKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if k.txnLost.Load() && strings.HasPrefix(key, store.Prefix("jobs")) && k.getLost.CompareAndSwap(false, true) {
		return nil, context.DeadlineExceeded
	}
	return k.KV.Get(ctx, key, opts...)
}

func (k *lossyKV) Txn(ctx context.Context) clientv3.Txn {
	return &lossyTxn{Txn: k.KV.Txn(ctx), kv: k}
}

type lossyTxn struct {
	clientv3.Txn
	kv   *lossyKV
	jobs bool
}

func (t *lossyTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }
func (t *lossyTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Else(ops...)
	return t
}

func (t *lossyTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		if op.IsPut() && strings.HasPrefix(string(op.KeyBytes()), store.Prefix("jobs")) {
			t.jobs = true
		}
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *lossyTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.Txn.Commit()
	if err == nil && t.jobs && t.kv.armed.Load() && t.kv.txnLost.CompareAndSwap(false, true) {
		return nil, context.DeadlineExceeded
	}
	return resp, err
}

// TestDispatchAnswerLost: etcd applies a job's dispatch but its answer is
// lost, and the read-back that tells whose dispatch it was times out once
// too. The machine still gets its job's script.
func TestDispatchAnswerLost(t *testing.T) {
	st := storetest.New(t)
	kv := &lossyKV{KV: st.Client().KV}
	st.Client().KV = kv
	h := start(t, st)
	h.seed(t, mac)
	jr, err := h.jobs.CreateJob(t.Context(), &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	kv.armed.Store(true)
	code, body := h.get(t, "/ipxe/v1/config?mac="+mac+"&arch=x86_64&platform=pcbios")
	if !kv.txnLost.Load() || !kv.getLost.Load() {
		t.Fatalf("the faults did not happen (dispatch answer lost %v, read-back lost %v)", kv.txnLost.Load(), kv.getLost.Load())
	}
	if code != 200 || !strings.Contains(body, "kernel ") || !strings.Contains(body, "bootchain.token=") {
		t.Fatalf("a dispatched job's machine got no job script: %d\n%s", code, body)
	}
	if j := getJob(t, h, jr.GetJob().GetId()); j.GetState() != bootapiv1.JobState_JOB_STATE_DISPATCHED {
		t.Fatalf("job %v, want dispatched", j.GetState())
	}
}
