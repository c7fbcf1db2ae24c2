package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// spawn starts a background process in its own session with output to dir/logs/name.log and a pid file
// in dir/run. The process outlives the launcher; the launcher reaps it if it exits while up is running.
func spawn(dir, name string, env []string, bin string, args ...string) (Component, error) {
	logPath := filepath.Join(dir, "logs", name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return Component{}, err
	}
	defer func() { _ = logf.Close() }()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Component{}, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait() }()
	c := Component{Name: name, PID: cmd.Process.Pid, Log: logPath}
	for range 100 {
		if start, ok := procStart(c.PID); ok {
			c.Start = start
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(dir, "run", name+".pid"), []byte(strconv.Itoa(c.PID)+"\n"), 0o644); err != nil {
		return c, err
	}
	return c, nil
}

// stopTiers is the shutdown order: clients of the apiserver first (they stall when it vanishes under them),
// then the apiserver, then etcd.
var stopTiers = [][]string{{"kube-apiserver"}, {"etcd"}}

// stopAll stops the components tier by tier (see stopTiers) and returns the names of those that survived SIGKILL.
func stopAll(comps []Component, grace time.Duration) []string {
	tiered := slices.Concat(stopTiers...)
	tiers := [][]Component{nil}
	for _, c := range comps {
		if !slices.Contains(tiered, c.Name) {
			tiers[0] = append(tiers[0], c)
		}
	}
	for _, names := range stopTiers {
		var tier []Component
		for _, c := range comps {
			if slices.Contains(names, c.Name) {
				tier = append(tier, c)
			}
		}
		tiers = append(tiers, tier)
	}
	var left []string
	for _, tier := range tiers {
		left = append(left, stopGroup(tier, grace)...)
	}
	return left
}

// stopGroup sends SIGTERM to every live component's process group, waits up to grace, then SIGKILLs the rest.
func stopGroup(comps []Component, grace time.Duration) []string {
	var live []Component
	for _, c := range comps {
		if c.alive() {
			live = append(live, c)
			_ = syscall.Kill(-c.PID, syscall.SIGTERM)
			_ = syscall.Kill(c.PID, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && anyAlive(live) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range live {
		if c.alive() {
			_ = syscall.Kill(-c.PID, syscall.SIGKILL)
			_ = syscall.Kill(c.PID, syscall.SIGKILL)
		}
	}
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && anyAlive(live) {
		time.Sleep(50 * time.Millisecond)
	}
	var left []string
	for _, c := range live {
		if c.alive() {
			left = append(left, fmt.Sprintf("%s (pid %d)", c.Name, c.PID))
		}
	}
	return left
}

func anyAlive(comps []Component) bool {
	for _, c := range comps {
		if c.alive() {
			return true
		}
	}
	return false
}

// freePorts reserves n distinct free loopback ports and releases them together.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
