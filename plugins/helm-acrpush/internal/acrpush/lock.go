package acrpush

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Lock states reported per artifact with --lock.
const (
	LockLocked   = "locked"
	LockAlready  = "already locked"
	LockWould    = "would lock"
	LockFailed   = "failed"
	LockNotDone  = "not locked"
	lockAPIScope = "metadata_read,metadata_write"
	// disallowedCode is ACR's error code for a write to a locked tag or repository.
	disallowedCode = "REGISTRY_DISALLOWED_OPERATION"
)

// tagAttributes are the changeable attributes of a tag in Azure Container Registry, the ones
// `az acr repository update --image REPO:TAG` sets through the registry's /acr/v1 API.
type tagAttributes struct {
	DeleteEnabled *bool `json:"deleteEnabled,omitempty"`
	WriteEnabled  *bool `json:"writeEnabled,omitempty"`
}

// locked reports whether the tag can neither move nor be deleted (a missing attribute is ACR's
// default, enabled).
func (a tagAttributes) locked() bool {
	return a.WriteEnabled != nil && !*a.WriteEnabled && a.DeleteEnabled != nil && !*a.DeleteEnabled
}

// writable reports whether the tag may be moved.
func (a tagAttributes) writable() bool { return a.WriteEnabled == nil || *a.WriteEnabled }

// tagAPI reads and sets tag attributes through ACR's data-plane API,
// /acr/v1/{repository}/_tags/{tag} (API version 2021-07-01, as the Azure SDKs call it).
type tagAPI struct {
	sess *sessions
}

// tagURL is the /acr/v1 address of ref's tag; the repository is escaped whole, slashes
// included, as the Azure SDKs send it.
func tagURL(ref name.Tag) string {
	repo, tag := ref.RepositoryStr(), ref.TagStr()
	u := url.URL{
		Scheme:   ref.Context().Registry.Scheme(),
		Host:     ref.RegistryStr(),
		Path:     "/acr/v1/" + repo + "/_tags/" + tag,
		RawPath:  "/acr/v1/" + url.PathEscape(repo) + "/_tags/" + url.PathEscape(tag),
		RawQuery: "api-version=2021-07-01",
	}
	return u.String()
}

// get reads ref's attributes.
func (t tagAPI) get(ctx context.Context, ref name.Tag) (tagAttributes, error) {
	return t.do(ctx, http.MethodGet, ref, nil)
}

// lock sets writeEnabled and deleteEnabled to false: the tag can no longer be moved or deleted.
func (t tagAPI) lock(ctx context.Context, ref name.Tag) (tagAttributes, error) {
	off := false
	return t.do(ctx, http.MethodPatch, ref, &tagAttributes{DeleteEnabled: &off, WriteEnabled: &off})
}

func (t tagAPI) do(ctx context.Context, method string, ref name.Tag, body *tagAttributes) (tagAttributes, error) {
	rt, err := t.sess.transport(ctx, ref.Context().Registry)
	if err != nil {
		return tagAttributes{}, registryError(ref.RegistryStr(), err)
	}
	var payload io.Reader = http.NoBody
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return tagAttributes{}, err
		}
		payload = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, tagURL(ref), payload)
	if err != nil {
		return tagAttributes{}, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return tagAttributes{}, registryError(ref.RegistryStr(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return tagAttributes{}, tagAPIError(ref, err)
	}
	var props struct {
		Tag struct {
			Attributes tagAttributes `json:"changeableAttributes"`
		} `json:"tag"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&props); err != nil {
		return tagAttributes{}, fmt.Errorf("%s: the registry's tag attributes are not JSON: %w", ref, err)
	}
	return props.Tag.Attributes, nil
}

// tagAPIError says what a refused /acr/v1 call means for the user.
func tagAPIError(ref name.Tag, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%s: the registry refused to read or change the tag's attributes (%s): the identity needs the repository's metadata read and write permissions (Owner and Contributor have them; otherwise a role with ACR's metadata write data action)", ref, oneLine(te.Error()))
		case http.StatusNotFound:
			for _, d := range te.Errors {
				if string(d.Code) == "TAG_UNKNOWN" {
					return fmt.Errorf("%s: the registry does not know the tag", ref)
				}
			}
			return fmt.Errorf("%s: the registry has no tag attributes API (/acr/v1): --lock works with Azure Container Registry only", ref)
		}
	}
	return fmt.Errorf("%s: %w", ref, registryError(ref.RegistryStr(), err))
}

// lockedWrite explains a write ACR refused with 405 REGISTRY_DISALLOWED_OPERATION: a lock on the
// tag or its repository, or (ACR's FAQ) a registry at its storage limit; other errors are
// returned as they are.
func lockedWrite(ref name.Reference, err error) error {
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusMethodNotAllowed {
		return err
	}
	for _, d := range te.Errors {
		if string(d.Code) == disallowedCode {
			return fmt.Errorf("the registry refuses to change %s (%s): the tag or its repository is locked, writeEnabled=false (unlock it with 'az acr repository update --name %s --image %s --write-enabled true', or --repository for the repository), or the registry is at its storage limit",
				ref, disallowedCode, registryName(ref.Context().RegistryStr()), strings.TrimPrefix(ref.String(), ref.Context().RegistryStr()+"/"))
		}
	}
	return err
}

// planLock is the lock state a target starts with: none for a reference without a tag, "already
// locked" for a tag that holds the digest and is locked, "would lock" otherwise. A tag that the
// run would move (--force) must not be write-locked: that is an error before anything is written.
func planLock(ctx context.Context, api tagAPI, ref name.Reference, existing, digest string) (string, error) {
	tag, ok := ref.(name.Tag)
	if !ok {
		return "", nil
	}
	if existing == "" {
		return LockWould, nil
	}
	attrs, err := api.get(ctx, tag)
	if err != nil {
		return "", err
	}
	switch {
	case existing != digest && !attrs.writable():
		return "", fmt.Errorf("%s is locked in the registry (writeEnabled=false): --force cannot move it; unlock it with 'az acr repository update --name %s --image %s --write-enabled true'",
			tag, registryName(tag.RegistryStr()), strings.TrimPrefix(tag.String(), tag.RegistryStr()+"/"))
	case existing == digest && attrs.locked():
		return LockAlready, nil
	}
	return LockWould, nil
}

// lockTarget is a tag the run locks, and where its outcome is recorded.
type lockTarget struct {
	ref   name.Tag
	state *string
}

// lockTargets locks the tags of the run (images and chart) that are not locked yet, a few at a
// time, and records each outcome.
func lockTargets(ctx context.Context, api tagAPI, targets []lockTarget, jobs int) error {
	errs := make([]error, len(targets))
	_ = forEach(len(targets), jobs, func(i int) error {
		t := targets[i]
		if *t.state == LockAlready {
			return nil
		}
		attrs, err := api.lock(ctx, t.ref)
		if err == nil && !attrs.locked() {
			err = fmt.Errorf("%s: the registry answered the lock with writeEnabled or deleteEnabled still true", t.ref)
		}
		errs[i] = err
		*t.state = LockLocked
		if err != nil {
			*t.state = LockFailed
		}
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("everything was pushed, but locking failed (a rerun with --lock locks what is left): %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}

// registryName is what `az acr` calls a registry: the first label of an ACR login server, the
// host otherwise.
func registryName(host string) string {
	if IsACR(host) {
		return strings.SplitN(host, ".", 2)[0]
	}
	return host
}
