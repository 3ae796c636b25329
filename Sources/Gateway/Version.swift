/// Veil's version: `veil --version`, the start-up line. The one place it is written.
public enum VeilVersion {
    public static let current = "0.1.0"
}
