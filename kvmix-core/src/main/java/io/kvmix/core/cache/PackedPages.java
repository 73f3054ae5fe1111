package io.kvmix.core.cache;

import io.kvmix.core.quant.PackedLayout;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.BitSet;

/**
 * Storage of one stream's packed blocks (FORMAT.md section 4.2): blocks live in pages of
 * {@link #BLOCKS_PER_PAGE} consecutive blocks laid out {@code [head][block in page][matrix]}, so that one
 * head's history is read as long sequential runs. Pages are recycled through a free list and freed whole
 * once every block in them is hidden by the sliding window.
 *
 * <p>Public only for {@link #BLOCKS_PER_PAGE}: other backends (kvmix-cuda) page their blocks the same way,
 * so that they free blocks at the same moments and report the same live bytes (FORMAT.md section 4.1).
 */
public final class PackedPages {
    /** Blocks per page: 16 blocks of G = 32 tokens = 512 tokens of one head contiguous. */
    public static final int BLOCKS_PER_PAGE = 16;

    private final int heads;
    private final long matrixBytes;
    private final Arena arena;
    /** Page p holds blocks p*P .. p*P+P-1; null if never allocated or freed. */
    private final ArrayList<MemorySegment> pages = new ArrayList<>();
    private final ArrayDeque<MemorySegment> freePages = new ArrayDeque<>();
    /** Blocks that were quantized (a block hidden before it was spilled is never written). */
    private final BitSet written = new BitSet();
    private int blockCount;
    private int liveBlocks;
    /** Pages below this index have been released. */
    private int releasedPages;

    PackedPages(int heads, PackedLayout layout, Arena arena) {
        this.heads = heads;
        this.matrixBytes = layout.bytes();
        this.arena = arena;
    }

    int blockCount() {
        return blockCount;
    }

    /** Blocks written and not freed. */
    int liveBlocks() {
        return liveBlocks;
    }

    /** The page that will hold the next block, allocated if needed. */
    MemorySegment pageForNext() {
        int page = blockCount / BLOCKS_PER_PAGE;
        while (pages.size() <= page) {
            pages.add(null);
        }
        MemorySegment segment = pages.get(page);
        if (segment == null) {
            segment = freePages.pollFirst();
            if (segment == null) {
                segment = arena.allocate(heads * BLOCKS_PER_PAGE * matrixBytes, 64);
            }
            pages.set(page, segment);
        }
        return segment;
    }

    /** Byte offset, in its page, of the matrix of {@code head} in block {@code block}. */
    long matrixOffset(int block, int head) {
        return ((long) head * BLOCKS_PER_PAGE + block % BLOCKS_PER_PAGE) * matrixBytes;
    }

    /** Counts the next block as written (after quantizing into {@link #pageForNext()}) or as dropped unwritten. */
    void commitNext(boolean wasWritten) {
        if (wasWritten) {
            written.set(blockCount);
            liveBlocks++;
        }
        blockCount++;
    }

    /** The page holding {@code block}, or null if the block was dropped or freed. */
    MemorySegment liveBlock(int block) {
        if (!written.get(block)) {
            return null;
        }
        return pages.get(block / BLOCKS_PER_PAGE);
    }

    /** Frees every page whose blocks all lie before {@code blockLimit}. */
    void freeBefore(int blockLimit) {
        int limit = Math.min(blockLimit, blockCount) / BLOCKS_PER_PAGE;
        for (; releasedPages < limit; releasedPages++) {
            int first = releasedPages * BLOCKS_PER_PAGE;
            MemorySegment page = releasedPages < pages.size() ? pages.get(releasedPages) : null;
            int inPage = written.get(first, first + BLOCKS_PER_PAGE).cardinality();
            written.clear(first, first + BLOCKS_PER_PAGE);
            liveBlocks -= inPage;
            if (page != null) {
                freePages.addLast(page);
                pages.set(releasedPages, null);
            }
        }
    }
}
