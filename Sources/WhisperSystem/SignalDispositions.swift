import CWhisperLinux

/// Changes to this process's signal dispositions, each followed by the call that keeps the
/// spawner's record of them true: a child resets exactly the dispositions that record names
/// (not all 64) before exec, so a disposition changed without it would leak into children.
public enum SignalDispositions {
    /// Ignores SIGPIPE here (a peer gone mid-write gives EPIPE instead of killing whisperd), then
    /// has the spawner note it, so children still start with SIGPIPE at its default. Returns
    /// whether SIGPIPE is ignored. Not from two threads at once: the spawner's record is a
    /// global they would race on.
    @discardableResult
    public static func ignoreSIGPIPE() -> Bool {
        let ignored = whisper_ignore_sigpipe() == 0
        whisper_spawn_note_signal_dispositions()
        return ignored
    }
}
