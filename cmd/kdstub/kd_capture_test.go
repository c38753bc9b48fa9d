package main

import (
	"errors"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/shareddata"
	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdnet"
)

const windbgCapture = "testdata/kdnet/windbg-win10-10586-bootdbg-key-8.8.8.8.pcapng.gz"

// capturedRequest is one host→target manipulate request of the shared WinDbg capture, with the target's answer.
type capturedRequest struct {
	Frame    int
	ID       uint32
	Req      *kdproto.Manipulate
	Response *kdproto.Manipulate // nil for APIs without a reply
}

// windbgRequests decrypts the shared capture and returns WinDbg's manipulate requests in order, each once
// (retransmissions carry the same KD id and are dropped), paired with the target's response.
func windbgRequests(t *testing.T) []capturedRequest {
	t.Helper()
	f, err := os.Open(shareddata.Require(t, windbgCapture))
	require.NoError(t, err)
	defer f.Close()
	r, err := kdnet.NewCaptureReader(f)
	require.NoError(t, err)
	ck, err := kdnet.ParseKey("8.8.8.8")
	require.NoError(t, err)
	keys := kdnet.NewKeys(ck)
	var data *kdnet.Keys
	var out []capturedRequest
	seen := map[uint32]bool{}
	for {
		fr, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if !fr.UDP {
			continue
		}
		_, ch, err := kdnet.PeekHeader(fr.Payload)
		if err != nil {
			continue
		}
		if ch == kdnet.ChannelControl {
			dg, err := keys.Open(fr.Payload)
			if err == nil && kdnet.BodyKind(dg.Payload) == "response" {
				dk, err := kdnet.DeriveDataKey(ck, dg.Payload)
				require.NoError(t, err)
				data = keys.Clone()
				data.SetDataKey(dk)
			}
			continue
		}
		require.NotNil(t, data, "frame %d: data before any handshake", fr.N)
		dg, err := data.Open(fr.Payload)
		require.NoError(t, err, "frame %d", fr.N)
		p, err := kdproto.DecodePacket(dg.Payload)
		if err != nil || !p.IsData() || p.Type != kdproto.PacketTypeManipulate {
			continue
		}
		m, err := kdproto.DecodeManipulate(p.Data)
		require.NoError(t, err, "frame %d", fr.N)
		if dg.FromHost {
			if !seen[p.ID] {
				seen[p.ID] = true
				out = append(out, capturedRequest{Frame: fr.N, ID: p.ID, Req: m})
			}
			continue
		}
		// The target's response answers the latest request with the same ApiNumber.
		for i := len(out) - 1; i >= 0; i-- {
			if out[i].Req.APINumber == m.APINumber && out[i].Response == nil {
				out[i].Response = m
				break
			}
		}
	}
	require.NotEmpty(t, out, "no manipulate requests decoded from the capture")
	return out
}

// attachSignature reduces an ordered list of request ApiNumbers to the attach phase (up to and including the
// first ReadControlSpace) with documented tolerances:
//   - a run of consecutive ReadVirtualMemory requests is one "ReadVirtual+" token: how many reads WinDbg needs
//     depends on the guest (module count, name lengths, whether a debugger data list exists — the boot debugger
//     of the capture has none);
//   - a GetContext directly after a GetContextEx is dropped when refusedEx says the GetContextEx was refused: it
//     is the documented fallback (kd-protocol.md §8.2), taken only by targets without GetContextEx;
//   - a request repeated at once under a new id counts once (WinDbg re-issued GetContext in the RESEND/RESET
//     episode, frames 194/197); RestoreBreakPoint runs are exempt, since their count (0x20) is compared.
func attachSignature(apis []uint32, refusedEx bool) []string {
	var sig []string
	for i, a := range apis {
		name := kdproto.APIName(a)
		switch {
		case a == kdproto.APIReadVirtualMemory:
			if len(sig) > 0 && sig[len(sig)-1] == "ReadVirtual+" {
				continue
			}
			name = "ReadVirtual+"
		case a == kdproto.APIGetContext && refusedEx && i > 0 && apis[i-1] == kdproto.APIGetContextEx:
			continue
		case a != kdproto.APIRestoreBreakPoint && i > 0 && apis[i-1] == a:
			continue
		}
		sig = append(sig, name)
		if a == kdproto.APIReadControlSpace {
			break
		}
	}
	return sig
}

// TestWindbgCaptureAttachSignature pins what the comparison is made against, so a change in the capture reader
// cannot silently empty both sides.
func TestWindbgCaptureAttachSignature(t *testing.T) {
	reqs := windbgRequests(t)
	var apis []uint32
	for _, r := range reqs {
		apis = append(apis, r.Req.APINumber)
	}
	// The boot debugger refused GetContextEx (frames 190–196).
	refused := false
	for _, r := range reqs {
		if r.Req.APINumber == kdproto.APIGetContextEx {
			require.NotNil(t, r.Response)
			refused = r.Response.ReturnStatus == kdproto.StatusUnsuccessful
			break
		}
	}
	require.True(t, refused, "the capture's first GetContextEx should have been refused")
	sig := attachSignature(apis, true)
	want := []string{kdproto.APIName(kdproto.APIGetVersion), "ReadVirtual+"}
	for range kdproto.AttachBreakpointProbes {
		want = append(want, kdproto.APIName(kdproto.APIRestoreBreakPoint))
	}
	want = append(want, "ReadVirtual+", kdproto.APIName(kdproto.APIGetContextEx), kdproto.APIName(kdproto.APIReadControlSpace))
	require.Equal(t, want, sig)
}
