package rsp

import (
	"context"
	"errors"
	"fmt"
)

// Memory packet limits of QEMU 7.2 (qemu.md §2.3).
const (
	MaxReadChunk  = 2048 // m length above 0x800 returns E22
	MaxWriteChunk = 1024 // M carries hex, so half of what fits a 4096-byte packet, rounded down
	pipelineDepth = 16   // outstanding m requests per exchange (2-3x over one at a time)
	pageSize      = 4096
)

// ReadMemory reads len(buf) bytes at addr, physical when phys is set, virtual (through the paging of thread
// t) otherwise. It returns how many leading bytes were read: virtual reads are split at page boundaries, so an
// unmapped page yields the bytes before it and an error wrapping a *StubError (E14).
func (c *Client) ReadMemory(ctx context.Context, t ThreadID, addr uint64, buf []byte, phys bool) (int, error) {
	if err := c.acquire(ctx); err != nil {
		return 0, err
	}
	defer c.release()
	if err := c.setPhysLocked(ctx, phys); err != nil {
		return 0, err
	}
	if !phys {
		if err := c.selectThreadLocked(ctx, "Hg", t); err != nil {
			return 0, err
		}
	}
	type chunk struct {
		off, n int
	}
	done := 0
	for done < len(buf) {
		var chunks []chunk
		var pkts []string
		off := done
		for len(chunks) < pipelineDepth && off < len(buf) {
			a := addr + uint64(off)
			n := min(len(buf)-off, MaxReadChunk, pageSize-int(a%pageSize))
			chunks = append(chunks, chunk{off, n})
			pkts = append(pkts, fmt.Sprintf("m%x,%x", a, n))
			off += n
		}
		replies, _, err := c.exchangeLocked(ctx, pkts, false, false)
		if err != nil {
			return done, fmt.Errorf("read %d bytes at %s %#x: %w", len(buf), space(phys), addr+uint64(done), err)
		}
		for i, r := range replies {
			ch := chunks[i]
			if err := replyError(r); err != nil {
				return done, fmt.Errorf("read %d bytes at %s %#x: %w", ch.n, space(phys), addr+uint64(ch.off), err)
			}
			data, err := decodeHex(r)
			if err != nil || len(data) != ch.n {
				if err == nil {
					err = fmt.Errorf("got %d bytes, asked %d: %w", len(data), ch.n, ErrMalformed)
				}
				return done, fmt.Errorf("read at %s %#x: %w", space(phys), addr+uint64(ch.off), err)
			}
			copy(buf[ch.off:], data)
			done += ch.n
		}
	}
	return done, nil
}

// WriteMemory writes buf at addr (physical or through thread t's paging), split like ReadMemory.
func (c *Client) WriteMemory(ctx context.Context, t ThreadID, addr uint64, buf []byte, phys bool) (int, error) {
	if err := c.acquire(ctx); err != nil {
		return 0, err
	}
	defer c.release()
	if err := c.setPhysLocked(ctx, phys); err != nil {
		return 0, err
	}
	if !phys {
		if err := c.selectThreadLocked(ctx, "Hg", t); err != nil {
			return 0, err
		}
	}
	done := 0
	for done < len(buf) {
		var pkts []string
		var sizes []int
		off := done
		for len(pkts) < pipelineDepth && off < len(buf) {
			a := addr + uint64(off)
			n := min(len(buf)-off, MaxWriteChunk, pageSize-int(a%pageSize))
			p := fmt.Appendf(nil, "M%x,%x:", a, n)
			pkts = append(pkts, string(encodeHex(p, buf[off:off+n])))
			sizes = append(sizes, n)
			off += n
		}
		replies, _, err := c.exchangeLocked(ctx, pkts, false, false)
		if err != nil {
			return done, fmt.Errorf("write %d bytes at %s %#x: %w", len(buf), space(phys), addr+uint64(done), err)
		}
		for i, r := range replies {
			if err := checkOK("M", r); err != nil {
				return done, fmt.Errorf("write at %s %#x: %w", space(phys), addr+uint64(done), err)
			}
			done += sizes[i]
		}
	}
	return done, nil
}

// ReadPhysical reads guest-physical memory; physical reads never fault in QEMU (unassigned space reads as zero).
func (c *Client) ReadPhysical(ctx context.Context, pa uint64, buf []byte) error {
	_, err := c.ReadMemory(ctx, ThreadID{}, pa, buf, true)
	return err
}

// WritePhysical writes guest-physical memory; writes to unassigned space are silently dropped by QEMU.
func (c *Client) WritePhysical(ctx context.Context, pa uint64, buf []byte) error {
	_, err := c.WriteMemory(ctx, ThreadID{}, pa, buf, true)
	return err
}

func space(phys bool) string {
	if phys {
		return "PA"
	}
	return "VA"
}

// setPhysLocked switches Qqemu.PhyMemMode when it differs from the cached value.
func (c *Client) setPhysLocked(ctx context.Context, phys bool) error {
	want := 0
	if phys {
		want = 1
	}
	c.mu.Lock()
	cur := c.phys
	c.mu.Unlock()
	if cur == want {
		return nil
	}
	pkt := fmt.Sprintf("Qqemu.PhyMemMode:%d", want)
	r, _, err := c.exchangeLocked(ctx, []string{pkt}, false, false)
	if err == nil {
		err = checkOK(pkt, r[0])
	}
	if err != nil {
		c.mu.Lock()
		c.phys = -1
		c.mu.Unlock()
		return err
	}
	c.mu.Lock()
	c.phys = want
	c.mu.Unlock()
	return nil
}

// IsFault reports whether err is the stub's EFAULT (unmapped memory).
func IsFault(err error) bool {
	var se *StubError
	return errors.As(err, &se) && se.Code == CodeFault
}
