// Package log stands in for github.com/withmandala/go-log, which Debian does
// not package, so that Locktopus builds offline: the calls Locktopus makes,
// written over the standard logger. Benchmarks run it with logging off.
package log

import (
	"fmt"
	"io"
	stdlog "log"
)

type Logger struct{ l *stdlog.Logger }

func New(w io.Writer) *Logger { return &Logger{stdlog.New(w, "", stdlog.LstdFlags)} }

func (l *Logger) WithDebug() *Logger { return l }

func (l *Logger) put(level, s string) { _ = l.l.Output(3, level+" "+s) }

func (l *Logger) Info(a ...interface{})             { l.put("INFO", fmt.Sprint(a...)) }
func (l *Logger) Infof(f string, a ...interface{})  { l.put("INFO", fmt.Sprintf(f, a...)) }
func (l *Logger) Warn(a ...interface{})             { l.put("WARN", fmt.Sprint(a...)) }
func (l *Logger) Warnf(f string, a ...interface{})  { l.put("WARN", fmt.Sprintf(f, a...)) }
func (l *Logger) Error(a ...interface{})            { l.put("ERROR", fmt.Sprint(a...)) }
func (l *Logger) Errorf(f string, a ...interface{}) { l.put("ERROR", fmt.Sprintf(f, a...)) }
