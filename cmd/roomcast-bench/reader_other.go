//go:build !linux

package main

import (
	"errors"
	"net"
	"sync"
)

// epollAvailable says that this system has no epoll reader: streams are
// read by a goroutine each.
const epollAvailable = false

// defaultReader is the reader of a Config that names none.
const defaultReader = ReaderGoroutine

// streamReaders exist on Linux only; checkReader refuses ReaderEpoll
// elsewhere, so none is ever made.
type streamReaders struct{}

func newStreamReaders(int) (*streamReaders, error) {
	return nil, errors.New("-reader epoll needs Linux")
}

func (*streamReaders) start(*sync.WaitGroup) {}

func (*streamReaders) stop() {}

func (*streamReaders) add(*subscriber, net.Conn, *streamDecoder) error {
	return errors.New("-reader epoll needs Linux")
}
