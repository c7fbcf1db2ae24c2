package acrpush

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// progressBar redraws one line on a terminal: a bar, bytes done and total. A nil *progressBar
// does nothing, so callers need no checks.
type progressBar struct {
	w     io.Writer
	total atomic.Int64
	done  atomic.Int64
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newProgressBar(w io.Writer) *progressBar {
	if w == nil {
		return nil
	}
	return &progressBar{w: w, stop: make(chan struct{})}
}

func (p *progressBar) addTotal(n int64) {
	if p != nil {
		p.total.Add(n)
	}
}

func (p *progressBar) add(n int64) {
	if p != nil {
		p.done.Add(n)
	}
}

func (p *progressBar) start() {
	if p == nil {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.draw()
				fmt.Fprint(p.w, "\n")
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
}

func (p *progressBar) finish() {
	if p == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
}

func (p *progressBar) draw() {
	total, done := p.total.Load(), p.done.Load()
	const width = 30
	filled := 0
	if total > 0 {
		filled = int(min(done, total) * width / total)
	}
	fmt.Fprintf(p.w, "\r[%s%s] %s / %s", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), humanBytes(done), humanBytes(total))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
