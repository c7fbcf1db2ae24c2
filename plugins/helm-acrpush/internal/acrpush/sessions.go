package acrpush

import (
	"context"
	"net/http"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// sessions signs in to each registry of a run once. go-containerregistry on its own pings the
// registry and fetches a token for every repository it touches (and again when a blob is mounted
// from another repository); a run that knows every repository up front asks once per registry for
// a token covering all of them: one ping and one token instead of one per repository, which is
// the sign-in latency before the first byte moves. A repository missing from the list still
// works: the bearer transport adds the scope a 401 challenge names and fetches a new token.
type sessions struct {
	base   http.RoundTripper // retrying, counting, user agent
	kc     authn.Keychain
	ropts  []remote.Option // jobs, retries of whole uploads
	mu     sync.Mutex
	scopes map[string][]string // registry -> scopes
	m      map[string]*session
}

type session struct {
	once   sync.Once
	rt     http.RoundTripper
	puller *remote.Puller
	pusher *remote.Pusher
	err    error
}

func newSessions(base http.RoundTripper, kc authn.Keychain, ropts ...remote.Option) *sessions {
	return &sessions{base: base, kc: kc, ropts: ropts, scopes: map[string][]string{}, m: map[string]*session{}}
}

// need adds the scope of action (transport.PullScope, transport.PushScope) on repo to the token
// of its registry. Scopes added after the registry's session started are fetched on demand.
func (s *sessions) need(repo name.Repository, action string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := repo.Scope(action)
	if reg := repo.RegistryStr(); !slices.Contains(s.scopes[reg], sc) {
		s.scopes[reg] = append(s.scopes[reg], sc)
	}
}

// get returns the registry's session, signing in on first use.
func (s *sessions) get(ctx context.Context, reg name.Registry) *session {
	s.mu.Lock()
	e, ok := s.m[reg.RegistryStr()]
	if !ok {
		e = &session{}
		s.m[reg.RegistryStr()] = e
	}
	scopes := slices.Clone(s.scopes[reg.RegistryStr()])
	s.mu.Unlock()
	e.once.Do(func() {
		auth, err := authn.Resolve(ctx, s.kc, reg)
		if err != nil {
			e.err = err
			return
		}
		if e.rt, e.err = transport.NewWithContext(ctx, reg, auth, s.base, scopes); e.err != nil {
			return
		}
		// A *transport.Wrapper tells go-containerregistry the transport is signed in already.
		opts := append(slices.Clone(s.ropts), remote.WithTransport(e.rt))
		if e.puller, e.err = remote.NewPuller(opts...); e.err != nil {
			return
		}
		e.pusher, e.err = remote.NewPusher(opts...)
	})
	return e
}

func (s *sessions) transport(ctx context.Context, reg name.Registry) (http.RoundTripper, error) {
	e := s.get(ctx, reg)
	return e.rt, e.err
}

func (s *sessions) puller(ctx context.Context, reg name.Registry) (*remote.Puller, error) {
	e := s.get(ctx, reg)
	return e.puller, e.err
}

func (s *sessions) pusher(ctx context.Context, reg name.Registry) (*remote.Pusher, error) {
	e := s.get(ctx, reg)
	return e.pusher, e.err
}
