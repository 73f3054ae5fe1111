package io.kvmix.cuda;

/** A device allocation failed; says what it was for, how much was asked and how much was free. */
public final class DeviceMemoryException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final long requestedBytes;
    private final long freeBytes;

    public DeviceMemoryException(String what, long requestedBytes, long freeBytes, long totalBytes, Throwable cause) {
        super("cannot allocate " + requestedBytes + " bytes of GPU memory for " + what + ": " + freeBytes
                + " of " + totalBytes + " bytes free", cause);
        this.requestedBytes = requestedBytes;
        this.freeBytes = freeBytes;
    }

    public long requestedBytes() {
        return requestedBytes;
    }

    public long freeBytes() {
        return freeBytes;
    }
}
