// Command gopeer is a test peer that runs the real golang/groupcache code
// (github.com/golang/groupcache, as packaged by Debian) so that
// tower-groupcache can be tested for wire compatibility against it.
//
// Build (GOPATH mode, no modules):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o gopeer ./tests/interop/gopeer
//
// or simply tests/interop/gopeer/build.sh. See README.md beside this file.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang/groupcache"
	"github.com/golang/groupcache/consistenthash"
)

// maxSizedValue bounds the value size a "size:N:" key may ask for.
const maxSizedValue = 256 << 20

// loadCounter counts getter calls of one group, in total and per key.
type loadCounter struct {
	mu    sync.Mutex
	total int64
	byKey map[string]int64
}

func (c *loadCounter) inc(key string) {
	c.mu.Lock()
	c.total++
	c.byKey[key]++
	c.mu.Unlock()
}

func (c *loadCounter) snapshot() (int64, map[string]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int64, len(c.byKey))
	for k, v := range c.byKey {
		m[k] = v
	}
	return c.total, m
}

// valueFor computes the deterministic value of key, or an error.
//
//	"fail:..."      -> error "getter failed for key <key>"
//	"size:N:..."    -> N bytes: "value-of:<key>" repeated and cut to N
//	anything else   -> "value-of:<key>"
func valueFor(key string) ([]byte, error) {
	if strings.HasPrefix(key, "fail:") {
		return nil, fmt.Errorf("getter failed for key %q", key)
	}
	base := "value-of:" + key
	if strings.HasPrefix(key, "size:") {
		rest := key[len("size:"):]
		i := strings.IndexByte(rest, ':')
		if i < 0 {
			return nil, fmt.Errorf("bad size key %q: want size:N:<suffix>", key)
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil || n < 0 || n > maxSizedValue {
			return nil, fmt.Errorf("bad size in key %q (0..%d)", key, maxSizedValue)
		}
		out := make([]byte, n)
		for off := 0; off < n; off += len(base) {
			copy(out[off:], base)
		}
		return out, nil
	}
	return []byte(base), nil
}

type server struct {
	self     string
	peers    []string
	ring     *consistenthash.Map
	groups   map[string]*groupcache.Group
	counters map[string]*loadCounter
}

func (s *server) group(w http.ResponseWriter, r *http.Request) (string, *groupcache.Group, bool) {
	name := r.URL.Query().Get("group")
	if name == "" && len(s.groups) == 1 {
		for n := range s.groups {
			name = n
		}
	}
	g, ok := s.groups[name]
	if !ok {
		http.Error(w, "no such group: "+name, http.StatusNotFound)
		return name, nil, false
	}
	return name, g, true
}

func (s *server) handleGet(w http.ResponseWriter, r *http.Request) {
	_, g, ok := s.group(w, r)
	if !ok {
		return
	}
	key := r.URL.Query().Get("key")
	var b []byte
	if err := g.Get(r.Context(), key, groupcache.AllocatingByteSliceSink(&b)); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

type groupStats struct {
	Gets           int64
	CacheHits      int64
	PeerLoads      int64
	PeerErrors     int64
	Loads          int64
	LoadsDeduped   int64
	LocalLoads     int64
	LocalLoadErrs  int64
	ServerRequests int64
}

type statsReply struct {
	Group            string
	Self             string
	Stats            groupStats
	MainCache        groupcache.CacheStats
	HotCache         groupcache.CacheStats
	GetterLoads      int64
	GetterLoadsByKey map[string]int64
}

func (s *server) handleStats(w http.ResponseWriter, r *http.Request) {
	name, g, ok := s.group(w, r)
	if !ok {
		return
	}
	st := &g.Stats
	total, byKey := s.counters[name].snapshot()
	rep := statsReply{
		Group: name,
		Self:  s.self,
		Stats: groupStats{
			Gets:           st.Gets.Get(),
			CacheHits:      st.CacheHits.Get(),
			PeerLoads:      st.PeerLoads.Get(),
			PeerErrors:     st.PeerErrors.Get(),
			Loads:          st.Loads.Get(),
			LoadsDeduped:   st.LoadsDeduped.Get(),
			LocalLoads:     st.LocalLoads.Get(),
			LocalLoadErrs:  st.LocalLoadErrs.Get(),
			ServerRequests: st.ServerRequests.Get(),
		},
		MainCache:        g.CacheStats(groupcache.MainCache),
		HotCache:         g.CacheStats(groupcache.HotCache),
		GetterLoads:      total,
		GetterLoadsByKey: byKey,
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(rep)
}

// handleLoads answers the getter-call count for one key as a plain integer;
// unlike the JSON map of /stats it is exact for keys that are not valid UTF-8.
func (s *server) handleLoads(w http.ResponseWriter, r *http.Request) {
	name, _, ok := s.group(w, r)
	if !ok {
		return
	}
	c := s.counters[name]
	c.mu.Lock()
	n := c.byKey[r.URL.Query().Get("key")]
	c.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, n)
}

func (s *server) handleOwner(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, s.ring.Get(r.URL.Query().Get("key")))
}

func main() {
	self := flag.String("self", "", "this node's base URL, e.g. http://127.0.0.1:9101 (empty: http://<bound listen addr>)")
	peersFlag := flag.String("peers", "", "comma-separated base URLs of all peers, self included; a literal SELF entry is replaced by the self URL")
	listen := flag.String("listen", "", "listen address (default: host:port of -self; 127.0.0.1:0 picks a free port)")
	groupsFlag := flag.String("group", "users", "group name, or comma-separated list of group names")
	cacheBytes := flag.Int64("cache-bytes", 64<<20, "cacheBytes of each group (main+hot together)")
	getterDelay := flag.Duration("getter-delay", 0, "sleep this long in every getter call (to make concurrent loads overlap)")
	benchLocal := flag.Int("bench-local", 0, "instead of serving: time this many local cache hits per goroutine, with 1 and 2 goroutines, print one JSON line and exit")
	flag.Parse()
	log.SetPrefix("gopeer: ")
	if *benchLocal > 0 {
		benchLocalHits(*benchLocal, *cacheBytes)
		return
	}

	addr := *listen
	if addr == "" {
		if *self == "" {
			log.Fatal("need -self or -listen")
		}
		host := strings.TrimPrefix(strings.TrimPrefix(*self, "http://"), "https://")
		if i := strings.IndexByte(host, '/'); i >= 0 {
			host = host[:i]
		}
		addr = host
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatalf("listen %s: %v", addr, err)
	}
	bound := ln.Addr().String()
	selfURL := *self
	if selfURL == "" {
		selfURL = "http://" + bound
	}

	var peers []string
	for _, p := range strings.Split(*peersFlag, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if p == "SELF" {
			p = selfURL
		}
		peers = append(peers, p)
	}
	if len(peers) == 0 {
		peers = []string{selfURL}
	}

	pool := groupcache.NewHTTPPoolOpts(selfURL, &groupcache.HTTPPoolOptions{})
	pool.Set(peers...)
	ring := consistenthash.New(50, nil) // same defaults as HTTPPool (50 replicas, crc32 IEEE)
	ring.Add(peers...)

	s := &server{
		self:     selfURL,
		peers:    peers,
		ring:     ring,
		groups:   map[string]*groupcache.Group{},
		counters: map[string]*loadCounter{},
	}
	for _, name := range strings.Split(*groupsFlag, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if _, dup := s.groups[name]; dup {
			continue
		}
		c := &loadCounter{byKey: map[string]int64{}}
		s.counters[name] = c
		delay := *getterDelay
		s.groups[name] = groupcache.NewGroup(name, *cacheBytes, groupcache.GetterFunc(
			func(ctx context.Context, key string, dest groupcache.Sink) error {
				c.inc(key)
				if delay > 0 {
					select {
					case <-time.After(delay):
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				v, err := valueFor(key)
				if err != nil {
					return err
				}
				return dest.SetBytes(v)
			}))
	}
	if len(s.groups) == 0 {
		log.Fatal("no group given")
	}

	mux := http.NewServeMux()
	mux.Handle("/_groupcache/", pool)
	mux.HandleFunc("/get", s.handleGet)
	mux.HandleFunc("/stats", s.handleStats)
	mux.HandleFunc("/owner", s.handleOwner)
	mux.HandleFunc("/loads", s.handleLoads)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "ok")
	})

	srv := &http.Server{Handler: mux}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		close(done)
	}()

	fmt.Printf("READY %s\n", bound)
	os.Stdout.Sync()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("serve: %v", err)
	}
	<-done
}

// benchLocalHits times Group.Get on keys in the group's main cache, on one node with no peers,
// the way the Rust side times CacheHandle::get: 100,000 keys loaded, each goroutine cycling
// over 1,000 of its own (the two goroutines of the second run over different ones). It prints
// {"one_thread_ns": .., "two_threads_gets_per_s": .., "one_thread_gets_per_s": ..}.
func benchLocalHits(n int, cacheBytes int64) {
	const entries, workingSet = 100000, 1000
	value := make([]byte, 64)
	for i := range value {
		value[i] = 'v'
	}
	g := groupcache.NewGroup("bench-local", cacheBytes, groupcache.GetterFunc(
		func(_ context.Context, key string, dest groupcache.Sink) error {
			return dest.SetBytes(value)
		}))
	keys := make([]string, entries)
	ctx := context.Background()
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%08d", i)
		var v groupcache.ByteView
		if err := g.Get(ctx, keys[i], groupcache.ByteViewSink(&v)); err != nil {
			log.Fatal(err)
		}
	}
	run := func(threads, iters int) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for t := 0; t < threads; t++ {
			wg.Add(1)
			go func(set []string) {
				defer wg.Done()
				var v groupcache.ByteView
				next := 0
				for i := 0; i < iters; i++ {
					if err := g.Get(ctx, set[next], groupcache.ByteViewSink(&v)); err != nil {
						log.Fatal(err)
					}
					next++
					if next == workingSet {
						next = 0
					}
				}
			}(keys[t*workingSet : (t+1)*workingSet])
		}
		wg.Wait()
		return time.Since(start)
	}
	run(1, n/10) // warm-up
	one := run(1, n)
	two := run(2, n)
	fmt.Printf("{\"one_thread_ns\": %.1f, \"one_thread_gets_per_s\": %.0f, \"two_threads_gets_per_s\": %.0f}\n",
		float64(one.Nanoseconds())/float64(n),
		float64(n)/one.Seconds(),
		float64(2*n)/two.Seconds())
}
