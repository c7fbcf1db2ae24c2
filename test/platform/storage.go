package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Where the registries keep their blobs (PLATFORM_REGISTRY_STORAGE).
const (
	storageMemory = "memory"
	storageDisk   = "disk"
)

const (
	shmDir        = "/dev/shm"
	shmPrefix     = "mlplugins-platform-"
	tmpfsMagic    = 0x01021994
	minMemoryRoom = 6 << 30 // the benchmarks put about 3 GB in the two registries
)

// prepareRegistryStorage creates dir/registry. ACR keeps blobs in Azure Storage, not on the disk of
// the machine that pushes, while distribution's filesystem driver fsyncs every blob it commits: on
// one small VM that made every push wait for the local disk, a cost no real push to ACR has. So,
// as etcd runs with --unsafe-no-fsync here, the registries keep their blobs in memory: dir/registry
// is a link to a directory on tmpfs (/dev/shm) when it has room for them. want is
// PLATFORM_REGISTRY_STORAGE: "memory", "disk" or "" (memory when there is room).
func prepareRegistryStorage(dir, want string) (string, error) {
	link := filepath.Join(dir, "registry")
	switch want {
	case "", storageMemory, storageDisk:
	default:
		return "", fmt.Errorf("PLATFORM_REGISTRY_STORAGE=%q: want %s or %s", want, storageMemory, storageDisk)
	}
	if want != storageDisk {
		room, err := tmpfsRoom(shmDir)
		if err == nil && room < minMemoryRoom {
			err = fmt.Errorf("%s has %d MiB free, less than %d MiB", shmDir, room>>20, minMemoryRoom>>20)
		}
		if err == nil {
			sum := sha256.Sum256([]byte(dir))
			target := filepath.Join(shmDir, shmPrefix+hex.EncodeToString(sum[:6]))
			if err := os.RemoveAll(target); err != nil {
				return "", err
			}
			if err := os.MkdirAll(target, 0o700); err != nil {
				return "", err
			}
			return storageMemory, os.Symlink(target, link)
		}
		if want == storageMemory {
			return "", fmt.Errorf("PLATFORM_REGISTRY_STORAGE=memory: %w", err)
		}
	}
	return storageDisk, os.MkdirAll(link, 0o755)
}

// tmpfsRoom is the free space of path, which must be a tmpfs.
func tmpfsRoom(path string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	if st.Type != tmpfsMagic {
		return 0, fmt.Errorf("%s is not a tmpfs", path)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// removeLinkedStorage removes the tmpfs directory that path links to, if it is one of ours.
func removeLinkedStorage(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		return nil
	}
	target, err := os.Readlink(path)
	if err != nil {
		return err
	}
	if filepath.Dir(target) != shmDir || !strings.HasPrefix(filepath.Base(target), shmPrefix) {
		return nil
	}
	return os.RemoveAll(target)
}
