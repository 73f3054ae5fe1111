package io.kvmix.core.parallel;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Runs a range of independent work items on the calling thread and resident worker threads, and waits
 * for all of them. Every CPU kernel (attention, matmul, the dense baseline) runs on these same threads.
 *
 * <p>The range is cut into a few chunks per thread; the caller and the workers take chunks from a shared
 * counter, so a worker that the OS has not scheduled yet delays nothing: the caller takes its chunks.
 * Workers spin briefly for the next job before parking, since the kernels of a forward pass come back to
 * back and waking a parked thread (an idle virtual CPU) was measured to cost more than a whole
 * sub-millisecond attention call; a parallel stream on the common fork-join pool was 2.5x slower than this
 * for such calls. Concurrent callers do not wait for each other: whoever finds the workers busy runs serially.
 */
public final class Parallel {
    /** Threads used, including the caller: the number of available processors. */
    public static final int THREADS = Math.max(1, Runtime.getRuntime().availableProcessors());

    /** Chunks per thread: small enough to balance, large enough to keep the counter off the hot path. */
    private static final int CHUNKS_PER_THREAD = 4;
    /** How long an idle worker polls for the next job before parking. */
    private static final long SPIN_NANOS = 200_000;

    private static final ReentrantLock DISPATCH = new ReentrantLock();
    private static final Worker[] WORKERS = new Worker[THREADS - 1];
    private static volatile Job current;

    static {
        for (int i = 0; i < WORKERS.length; i++) {
            WORKERS[i] = new Worker(i + 1);
            WORKERS[i].start();
        }
    }

    private Parallel() {
    }

    /** Work on items {@code from .. to - 1}. */
    @FunctionalInterface
    public interface RangeBody {
        void run(int from, int to);
    }

    /** One call of {@link #forRange}: its chunks, the next one to take, and how many have finished. */
    private static final class Job {
        final RangeBody body;
        final int count;
        final int chunks;
        final AtomicInteger next = new AtomicInteger();
        final AtomicInteger finished = new AtomicInteger();
        final AtomicReference<Throwable> failure = new AtomicReference<>();

        Job(RangeBody body, int count, int chunks) {
            this.body = body;
            this.count = count;
            this.chunks = chunks;
        }

        /** Takes and runs chunks until none is left. */
        void work() {
            for (int c = next.getAndIncrement(); c < chunks; c = next.getAndIncrement()) {
                try {
                    body.run((int) ((long) count * c / chunks), (int) ((long) count * (c + 1) / chunks));
                } catch (Throwable e) {
                    failure.compareAndSet(null, e);
                } finally {
                    finished.incrementAndGet();
                }
            }
        }
    }

    /**
     * Runs {@code body} over {@code [0, count)} in contiguous chunks on all threads. Nested or concurrent
     * calls run serially. An exception in any chunk is rethrown after every chunk has ended.
     */
    public static void forRange(int count, RangeBody body) {
        int chunks = Math.min(THREADS * CHUNKS_PER_THREAD, count);
        if (THREADS == 1 || chunks <= 1 || Thread.currentThread() instanceof Worker || !DISPATCH.tryLock()) {
            if (count > 0) {
                body.run(0, count);
            }
            return;
        }
        try {
            Job job = new Job(body, count, chunks);
            current = job;
            for (Worker worker : WORKERS) {
                LockSupport.unpark(worker);
            }
            job.work();
            // Only chunks a worker has started are left; if its thread was descheduled, let it run.
            for (int spins = 0; job.finished.get() < chunks; spins++) {
                if (spins < 10_000) {
                    Thread.onSpinWait();
                } else {
                    Thread.yield();
                }
            }
            current = null;
            Throwable failure = job.failure.get();
            if (failure instanceof RuntimeException e) {
                throw e;
            }
            if (failure instanceof Error e) {
                throw e;
            }
            if (failure != null) {
                throw new IllegalStateException(failure);
            }
        } finally {
            DISPATCH.unlock();
        }
    }

    /** A resident thread that helps with whatever job is current. */
    private static final class Worker extends Thread {
        Worker(int index) {
            super("kvmix-worker-" + index);
            setDaemon(true);
        }

        @Override
        public void run() {
            Job last = null;
            while (true) {
                long idleSince = System.nanoTime();
                Job job;
                while ((job = current) == null || job == last) {
                    if (System.nanoTime() - idleSince < SPIN_NANOS) {
                        Thread.onSpinWait();
                    } else {
                        LockSupport.park(this);
                    }
                }
                job.work();
                last = job;
            }
        }
    }
}
