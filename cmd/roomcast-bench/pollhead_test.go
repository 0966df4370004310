package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// pollHeadBuffer is the poller's bufio size, so a head that would not fit
// the real reader does not fit here either.
const pollHeadBuffer = 4 << 10

func TestReadHead(t *testing.T) {
	tests := []struct {
		name        string
		head        string
		wantStatus  int
		wantLength  int
		wantClosing bool
		wantErr     string // substring; "" for success
		wantEOF     bool   // the error must be io.EOF
	}{
		{
			name:       "200 with Content-Length among other headers",
			head:       "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nCache-Control: no-store\r\n\r\n",
			wantStatus: 200, wantLength: 11,
		},
		{
			name:       "header names in lower case",
			head:       "HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\n",
			wantStatus: 200, wantLength: 7, wantClosing: true,
		},
		{
			name:       "header names in odd case and value without space",
			head:       "HTTP/1.1 200 OK\r\nCONTENT-LENGTH:3\r\nCoNnEcTiOn:CLOSE\r\n\r\n",
			wantStatus: 200, wantLength: 3, wantClosing: true,
		},
		{
			name:       "Connection close",
			head:       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
			wantStatus: 200, wantLength: 2, wantClosing: true,
		},
		{
			name:       "Connection keep-alive",
			head:       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
			wantStatus: 200, wantLength: 2,
		},
		{
			// The last Connection header decides, as the code keeps only one flag.
			name:       "Connection close then keep-alive",
			head:       "HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
			wantStatus: 200, wantLength: 0,
		},
		{
			name:       "no Content-Length",
			head:       "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",
			wantStatus: 200, wantLength: -1,
		},
		{
			name:       "Content-Length zero",
			head:       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
			wantStatus: 200, wantLength: 0,
		},
		{
			name:       "bare LF line endings",
			head:       "HTTP/1.1 200 OK\nContent-Length: 4\n\n",
			wantStatus: 200, wantLength: 4,
		},
		{
			// HTTP/1.0 closes unless it says otherwise.
			name:       "HTTP/1.0",
			head:       "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
			wantStatus: 200, wantLength: 1, wantClosing: true,
		},
		{
			name:       "HTTP/1.0 keep-alive",
			head:       "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
			wantStatus: 200, wantLength: 1,
		},
		{
			name:       "close in a list of options",
			head:       "HTTP/1.1 200 OK\r\nConnection: Upgrade, close\r\nContent-Length: 1\r\n\r\n",
			wantStatus: 200, wantLength: 1, wantClosing: true,
		},
		{
			name:    "four-digit status",
			head:    "HTTP/1.1 2000 OK\r\n\r\n",
			wantErr: "malformed status line",
		},
		{
			name:       "status line without a reason",
			head:       "HTTP/1.1 204\r\n\r\n",
			wantStatus: 204, wantLength: -1,
		},
		{
			name:       "204 No Content",
			head:       "HTTP/1.1 204 No Content\r\n\r\n",
			wantStatus: 204, wantLength: -1,
		},
		{
			name:       "404 with body",
			head:       "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n",
			wantStatus: 404, wantLength: 10,
		},
		{
			name:       "503 closing",
			head:       "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
			wantStatus: 503, wantLength: 5, wantClosing: true,
		},
		{
			name:    "status line too short",
			head:    "HTTP/1.1 20\r\n\r\n",
			wantErr: "malformed status line",
		},
		{
			name:    "status line not HTTP/1.x",
			head:    "HTTP/2.0 200 OK\r\n\r\n",
			wantErr: "malformed status line",
		},
		{
			name:    "status line of another protocol",
			head:    "SSH-2.0-OpenSSH_9.6\r\n\r\n",
			wantErr: "malformed status line",
		},
		{
			name:    "non-numeric status",
			head:    "HTTP/1.1 2x0 OK\r\n\r\n",
			wantErr: "malformed status line",
		},
		{
			name:    "signed status",
			head:    "HTTP/1.1 -99 X\r\n\r\n",
			wantErr: "malformed status line",
		},
		{
			name:    "no space after the version",
			head:    "HTTP/1.1_200 OK\r\n\r\n",
			wantErr: "malformed status line",
		},
		{
			name:       "header line without a colon",
			head:       "HTTP/1.1 200 OK\r\nContent-Length 5\r\n\r\n",
			wantStatus: 200, wantErr: "malformed header",
		},
		{
			name:       "Content-Length not a number",
			head:       "HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n",
			wantStatus: 200, wantErr: "malformed Content-Length",
		},
		{
			name:       "Content-Length empty",
			head:       "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
			wantStatus: 200, wantErr: "malformed Content-Length",
		},
		{
			name:       "Content-Length negative",
			head:       "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
			wantStatus: 200, wantErr: "malformed Content-Length",
		},
		{
			name:       "Transfer-Encoding chunked refused",
			head:       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
			wantStatus: 200, wantErr: "transfer encoding",
		},
		{
			// Refused even beside a Content-Length: the body could not be framed safely.
			name:       "Transfer-Encoding after Content-Length refused",
			head:       "HTTP/1.1 200 OK\r\nContent-Length: 5\r\ntransfer-encoding: gzip\r\n\r\n",
			wantStatus: 200, wantErr: "transfer encoding",
		},
		{
			name:    "empty input",
			head:    "",
			wantEOF: true,
		},
		{
			name:    "status line without its newline",
			head:    "HTTP/1.1 200 OK",
			wantEOF: true,
		},
		{
			name:       "headers truncated before the blank line",
			head:       "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
			wantStatus: 200, wantEOF: true,
		},
		{
			name:       "header truncated mid-line",
			head:       "HTTP/1.1 200 OK\r\nContent-Len",
			wantStatus: 200, wantEOF: true,
		},
	}
	const body = "{\"events\":[]}\r\nHTTP/1.1 200 OK\r\n\r\n"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := tt.head
			failing := tt.wantErr != "" || tt.wantEOF
			if !failing {
				// The body looks like another head on purpose: readHead must stop
				// at the first blank line, not scan on.
				input += body
			}
			br := bufio.NewReaderSize(strings.NewReader(input), pollHeadBuffer)
			status, length, closing, err := readHead(br)

			switch {
			case tt.wantEOF:
				if !errors.Is(err, io.EOF) {
					t.Fatalf("err = %v, want io.EOF", err)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
			case err != nil:
				t.Fatalf("unexpected error: %v", err)
			}
			// roundTrip reads a non-zero status on error as "the server answered".
			if status != tt.wantStatus {
				t.Errorf("status = %d, want %d", status, tt.wantStatus)
			}
			if failing {
				if length != -1 || closing {
					t.Errorf("on error got length %d, closing %v; want -1, false", length, closing)
				}
				return
			}
			if length != tt.wantLength {
				t.Errorf("length = %d, want %d", length, tt.wantLength)
			}
			if closing != tt.wantClosing {
				t.Errorf("closing = %v, want %v", closing, tt.wantClosing)
			}
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatal(err)
			}
			if string(rest) != body {
				t.Errorf("reader left at %q, want the body %q", rest, body)
			}
		})
	}
}

// FuzzReadHead feeds readHead arbitrary bytes: it must never panic, and
// a head it accepts must be one it could have parsed: a status of three
// digits, a usable length, and a consumed prefix that is an HTTP/1.x
// status line through a blank line.
func FuzzReadHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"events\":[]}"))
	f.Add([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"))
	f.Add([]byte("HTTP/1.0 204 No Content\n\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length 5\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"))
	f.Fuzz(func(t *testing.T, input []byte) {
		src := bytes.NewReader(input)
		br := bufio.NewReaderSize(src, pollHeadBuffer)
		status, length, _, err := readHead(br)
		if err != nil {
			return
		}
		if status < 0 || status > 999 {
			t.Errorf("accepted status %d", status)
		}
		if length < -1 {
			t.Errorf("accepted length %d", length)
		}
		consumed := input[:len(input)-src.Len()-br.Buffered()]
		if !bytes.HasPrefix(consumed, []byte("HTTP/1.")) {
			t.Errorf("accepted a head not starting with HTTP/1.: %q", consumed)
		}
		if !bytes.HasSuffix(consumed, []byte("\n")) {
			t.Fatalf("consumed %q, which does not end a line", consumed)
		}
		// The last consumed line must be the blank one ending the head.
		lines := bytes.Split(consumed[:len(consumed)-1], []byte("\n"))
		if len(lines) < 2 {
			t.Fatalf("consumed %q, a single line", consumed)
		}
		if last := lines[len(lines)-1]; len(bytes.TrimRight(last, "\r\n")) != 0 {
			t.Errorf("consumed %q, ending in the non-blank line %q", consumed, last)
		}
	})
}
