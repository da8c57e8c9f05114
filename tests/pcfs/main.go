// pcfs: a power-cut file system for messagebuffer's tests. It mounts a FUSE file system that
// passes every call through to a real directory, except that data written to a file stays
// in pcfs's memory until the file is fsynced, as data stays in a page cache. On command it
// cuts the power: it keeps none, a prefix, or some pages (with holes, or out of order) of
// each file's unsynced data, writes what it keeps to the directory, and from then on fails
// every call with EIO, like a dead disk. A new pcfs over the same directory then shows what
// a machine would find after the cut. Creations, renames and removals are passed through at
// once (what LazyFS calls a file system with durable metadata).
//
//	pcfs MOUNTPOINT BACKING_DIR CONTROL_SOCKET
//
// The control socket takes one command a line and answers one line:
//
//	cut MODE SEED   MODE: drop | prefix | holes | reorder; answers "ok files F kept K dropped D"
//	unsynced        answers "ok files F bytes B"
//
// SIGTERM or SIGINT unmounts and exits. Needs root (it mounts without fusermount).
package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const pageSize = 4096

// op is one unsynced change to a file: a write, or a truncation (trunc >= 0).
type op struct {
	off   int64
	data  []byte
	trunc int64
}

// overlay is a file's unsynced changes, in order, and a descriptor of the real file to apply
// them through (so that a renamed or removed file is still reachable).
type overlay struct {
	fd  int
	ops []op
}

var (
	mu       sync.Mutex
	overlays = map[uint64]*overlay{}
	dead     bool
)

func overlayOf(ino uint64, fd int) *overlay {
	ov := overlays[ino]
	if ov == nil {
		dup, err := syscall.Dup(fd)
		if err != nil {
			dup = -1
		}
		ov = &overlay{fd: dup}
		overlays[ino] = ov
	}
	return ov
}

// size is the file's size with the changes applied to a file of `base` bytes.
func (ov *overlay) size(base int64) int64 {
	s := base
	for _, o := range ov.ops {
		if o.trunc >= 0 {
			s = o.trunc
		} else if end := o.off + int64(len(o.data)); end > s {
			s = end
		}
	}
	return s
}

// apply lays the changes over buf, which holds the real file's bytes from `off` (zeros past
// its end).
func (ov *overlay) apply(buf []byte, off int64) {
	end := off + int64(len(buf))
	for _, o := range ov.ops {
		if o.trunc >= 0 {
			for i := o.trunc; i < end; i++ {
				if i >= off {
					buf[i-off] = 0
				}
			}
			continue
		}
		lo, hi := max(o.off, off), min(o.off+int64(len(o.data)), end)
		if lo < hi {
			copy(buf[lo-off:hi-off], o.data[lo-o.off:hi-o.off])
		}
	}
}

// write applies ops to the real file, in order.
func write(fd int, ops []op) error {
	for _, o := range ops {
		if o.trunc >= 0 {
			if err := syscall.Ftruncate(fd, o.trunc); err != nil {
				return err
			}
			continue
		}
		if _, err := syscall.Pwrite(fd, o.data, o.off); err != nil {
			return err
		}
	}
	return nil
}

// pages splits the writes of ops into page-aligned pieces, truncations kept whole.
func pages(ops []op) []op {
	var out []op
	for _, o := range ops {
		if o.trunc >= 0 {
			out = append(out, o)
			continue
		}
		for p := o.off; p < o.off+int64(len(o.data)); {
			next := min((p/pageSize+1)*pageSize, o.off+int64(len(o.data)))
			out = append(out, op{off: p, data: o.data[p-o.off : next-o.off], trunc: -1})
			p = next
		}
	}
	return out
}

// cut keeps part of each file's unsynced changes, as MODE says, writes it, and kills the
// file system.
func cut(mode string, seed int64) (files, kept, dropped int64, err error) {
	mu.Lock()
	defer mu.Unlock()
	dead = true
	r := rand.New(rand.NewSource(seed))
	inos := make([]uint64, 0, len(overlays))
	for ino := range overlays {
		inos = append(inos, ino)
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
	for _, ino := range inos {
		ov := overlays[ino]
		if len(ov.ops) == 0 || ov.fd < 0 {
			continue
		}
		files++
		var keep []op
		switch mode {
		case "drop":
		case "prefix":
			// The first k changes whole, and a prefix of the next: a write cut short.
			k := r.Intn(len(ov.ops) + 1)
			keep = append(keep, ov.ops[:k]...)
			if k < len(ov.ops) && ov.ops[k].trunc < 0 && len(ov.ops[k].data) > 0 {
				n := r.Intn(len(ov.ops[k].data))
				keep = append(keep, op{off: ov.ops[k].off, data: ov.ops[k].data[:n], trunc: -1})
			}
		case "holes":
			// Each page reaches the disk or not: holes of zeros inside what was written.
			for _, p := range pages(ov.ops) {
				if p.trunc >= 0 || r.Intn(2) == 0 {
					keep = append(keep, p)
				}
			}
		case "reorder":
			// The pages reach the disk out of order and the power goes in between: a run of
			// earlier pages is missing while later ones are there.
			ps := pages(ov.ops)
			from := r.Intn(len(ps))
			to := from + 1 + r.Intn(len(ps)-from)
			for i, p := range ps {
				if p.trunc >= 0 || i < from || i >= to {
					keep = append(keep, p)
				}
			}
		default:
			return 0, 0, 0, fmt.Errorf("unknown mode %q (drop, prefix, holes, reorder)", mode)
		}
		var all, k int64
		for _, o := range ov.ops {
			all += int64(len(o.data))
		}
		for _, o := range keep {
			k += int64(len(o.data))
		}
		kept += k
		dropped += all - k
		if err := write(ov.fd, keep); err != nil {
			return 0, 0, 0, err
		}
		if err := syscall.Fsync(ov.fd); err != nil {
			return 0, 0, 0, err
		}
	}
	return files, kept, dropped, nil
}

// node is a loopback node that keeps unsynced data in memory and dies at the cut.
type node struct {
	fs.LoopbackNode
}

func isDead() bool {
	mu.Lock()
	defer mu.Unlock()
	return dead
}

func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(n.Root()))
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if isDead() {
		return nil, syscall.EIO
	}
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno == 0 {
		n.fixSize(ch.StableAttr().Ino, &out.Attr)
	}
	return ch, errno
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if isDead() {
		return nil, syscall.EIO
	}
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if isDead() {
		return syscall.EIO
	}
	return n.LoopbackNode.Rmdir(ctx, name)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if isDead() {
		return syscall.EIO
	}
	return n.LoopbackNode.Unlink(ctx, name)
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if isDead() {
		return syscall.EIO
	}
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if isDead() {
		return nil, syscall.EIO
	}
	return n.LoopbackNode.Readdir(ctx)
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if isDead() {
		return nil, 0, syscall.EIO
	}
	return n.LoopbackNode.OpendirHandle(ctx, flags)
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if isDead() {
		return nil, nil, 0, syscall.EIO
	}
	p := filepath.Join(n.backingPath(), name)
	ch, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return ch, fh, fl, errno
	}
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		lf.Release(ctx)
	}
	fd, err := syscall.Open(p, int(flags&^(syscall.O_CREAT|syscall.O_EXCL|syscall.O_TRUNC|syscall.O_APPEND)), 0)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	ino := ch.StableAttr().Ino
	// A new file: the inode number may be that of a removed file whose unsynced writes are
	// still kept. They belong to that file, gone with it (as its page cache would be).
	mu.Lock()
	if ov := overlays[ino]; ov != nil {
		if ov.fd >= 0 {
			syscall.Close(ov.fd)
		}
		delete(overlays, ino)
	}
	mu.Unlock()
	return ch, &file{fd: fd, ino: ino}, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if isDead() {
		return nil, 0, syscall.EIO
	}
	trunc := flags&syscall.O_TRUNC != 0
	flags = flags &^ (syscall.O_APPEND | syscall.O_TRUNC | fuse.FMODE_EXEC)
	fd, err := syscall.Open(n.backingPath(), int(flags), 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	if trunc {
		// O_TRUNC is a truncation: it waits for fsync like a write.
		mu.Lock()
		ov := overlayOf(n.StableAttr().Ino, fd)
		ov.ops = append(ov.ops, op{trunc: 0})
		mu.Unlock()
	}
	return &file{fd: fd, ino: n.StableAttr().Ino}, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) fixSize(ino uint64, a *fuse.Attr) {
	mu.Lock()
	defer mu.Unlock()
	if ov := overlays[ino]; ov != nil {
		a.Size = uint64(ov.size(int64(a.Size)))
	}
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if isDead() {
		return syscall.EIO
	}
	if errno := n.LoopbackNode.Getattr(ctx, nil, out); errno != 0 {
		return errno
	}
	n.fixSize(n.StableAttr().Ino, &out.Attr)
	return 0
}

// Statx is what newer kernels ask instead of Getattr (Deno and Bun call statx): the size
// with the unsynced writes, like Getattr's.
func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if isDead() {
		return syscall.EIO
	}
	var st unix.Statx_t
	var err error
	if fh, ok := f.(*file); ok {
		err = unix.Statx(fh.fd, "", int(flags)|unix.AT_EMPTY_PATH, int(mask), &st)
	} else {
		err = unix.Statx(unix.AT_FDCWD, n.backingPath(), int(flags)|unix.AT_SYMLINK_NOFOLLOW, int(mask), &st)
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	out.FromStatx(&st)
	mu.Lock()
	defer mu.Unlock()
	if ov := overlays[n.StableAttr().Ino]; ov != nil {
		out.Size = uint64(ov.size(int64(st.Size)))
	}
	return 0
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if isDead() {
		return syscall.EIO
	}
	if sz, ok := in.GetSize(); ok {
		// A truncation is data: it waits for fsync like a write.
		mu.Lock()
		fd := -1
		if fh, ok := f.(*file); ok {
			fd = fh.fd
		} else if o, err := syscall.Open(n.backingPath(), syscall.O_RDWR, 0); err == nil {
			fd = o
			defer syscall.Close(o)
		}
		if fd < 0 {
			mu.Unlock()
			return syscall.EIO
		}
		ov := overlayOf(n.StableAttr().Ino, fd)
		ov.ops = append(ov.ops, op{trunc: int64(sz)})
		mu.Unlock()
		in.Valid &^= fuse.FATTR_SIZE
	}
	if errno := n.LoopbackNode.Setattr(ctx, nil, in, out); errno != 0 {
		return errno
	}
	n.fixSize(n.StableAttr().Ino, &out.Attr)
	return 0
}

// file is an open file: reads see the unsynced data; writes are kept until fsync.
type file struct {
	fd  int
	ino uint64
}

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	mu.Lock()
	defer mu.Unlock()
	if dead {
		return nil, syscall.EIO
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	size := st.Size
	ov := overlays[f.ino]
	if ov != nil {
		size = ov.size(st.Size)
	}
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	n := min(int64(len(buf)), size-off)
	out := buf[:n]
	for i := range out {
		out[i] = 0
	}
	if off < st.Size {
		if _, err := syscall.Pread(f.fd, out[:min(n, st.Size-off)], off); err != nil {
			return nil, fs.ToErrno(err)
		}
	}
	if ov != nil {
		ov.apply(out, off)
	}
	return fuse.ReadResultData(out), 0
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	mu.Lock()
	defer mu.Unlock()
	if dead {
		return 0, syscall.EIO
	}
	ov := overlayOf(f.ino, f.fd)
	ov.ops = append(ov.ops, op{off: off, data: append([]byte(nil), data...), trunc: -1})
	return uint32(len(data)), 0
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	mu.Lock()
	defer mu.Unlock()
	if dead {
		return syscall.EIO
	}
	if ov := overlays[f.ino]; ov != nil && len(ov.ops) > 0 {
		if err := write(f.fd, ov.ops); err != nil {
			return fs.ToErrno(err)
		}
		ov.ops = nil
	}
	return fs.ToErrno(syscall.Fdatasync(f.fd))
}

func (f *file) Flush(ctx context.Context) syscall.Errno {
	if isDead() {
		return syscall.EIO
	}
	return 0
}

func (f *file) Release(ctx context.Context) syscall.Errno {
	syscall.Close(f.fd)
	return 0
}

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	mu.Lock()
	defer mu.Unlock()
	if dead {
		return syscall.EIO
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	if ov := overlays[f.ino]; ov != nil {
		out.Size = uint64(ov.size(st.Size))
	}
	return 0
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	mu.Lock()
	if dead {
		mu.Unlock()
		return syscall.EIO
	}
	if sz, ok := in.GetSize(); ok {
		ov := overlayOf(f.ino, f.fd)
		ov.ops = append(ov.ops, op{trunc: int64(sz)})
	}
	if m, ok := in.GetMode(); ok {
		if err := syscall.Fchmod(f.fd, m); err != nil {
			mu.Unlock()
			return fs.ToErrno(err)
		}
	}
	mu.Unlock()
	return f.Getattr(ctx, out)
}

func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if isDead() {
		return syscall.EIO
	}
	return 0
}

func serveControl(path string) error {
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					f := strings.Fields(sc.Text())
					switch {
					case len(f) == 3 && f[0] == "cut":
						seed, _ := strconv.ParseInt(f[2], 10, 64)
						files, kept, dropped, err := cut(f[1], seed)
						if err != nil {
							fmt.Fprintf(c, "error %v\n", err)
						} else {
							fmt.Fprintf(c, "ok files %d kept %d dropped %d\n", files, kept, dropped)
						}
					case len(f) == 1 && f[0] == "unsynced":
						mu.Lock()
						var files, bytes int64
						for _, ov := range overlays {
							if len(ov.ops) > 0 {
								files++
							}
							for _, o := range ov.ops {
								bytes += int64(len(o.data))
							}
						}
						mu.Unlock()
						fmt.Fprintf(c, "ok files %d bytes %d\n", files, bytes)
					default:
						fmt.Fprintf(c, "error unknown command %q\n", sc.Text())
					}
				}
			}(c)
		}
	}()
	return nil
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: pcfs MOUNTPOINT BACKING_DIR CONTROL_SOCKET")
		os.Exit(2)
	}
	mnt, backing, ctl := os.Args[1], os.Args[2], os.Args[3]
	root := &fs.LoopbackRoot{Path: backing}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		fmt.Fprintf(os.Stderr, "pcfs: %s: %v\n", backing, err)
		os.Exit(1)
	}
	root.Dev = uint64(st.Dev)
	root.NewNode = func(r *fs.LoopbackRoot, parent *fs.Inode, name string, st *syscall.Stat_t) fs.InodeEmbedder {
		return &node{LoopbackNode: fs.LoopbackNode{RootData: r}}
	}
	rootNode := root.NewNode(root, nil, "", &st)
	root.RootNode = rootNode
	// No attribute or entry caching in the kernel: sizes change with unsynced writes.
	zero := time.Duration(0)
	server, err := fs.Mount(mnt, rootNode, &fs.Options{
		MountOptions: fuse.MountOptions{
			DirectMount: true,
			FsName:      "pcfs",
			Name:        "pcfs",
			AllowOther:  true,
		},
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pcfs: mount %s: %v\n", mnt, err)
		os.Exit(1)
	}
	if err := serveControl(ctl); err != nil {
		server.Unmount()
		fmt.Fprintf(os.Stderr, "pcfs: control socket %s: %v\n", ctl, err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		if err := server.Unmount(); err != nil {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
		os.Exit(0)
	}()
	fmt.Println("pcfs ready")
	server.Wait()
}
