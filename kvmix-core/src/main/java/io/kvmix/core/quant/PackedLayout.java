package io.kvmix.core.quant;

/**
 * Geometry of one packed matrix (one head of one block, FORMAT.md section 3): where every code
 * word, scale and min lives.
 *
 * <p>Words are consecutive along the <em>lane</em> axis and codes are packed inside a word along the
 * <em>pack</em> axis; quantization groups run along the lane axis.
 * <pre>
 *   uint32 words [runs][bits][laneLength]      runs = ceil(packLength / 32)
 *   fp16   scales[groupsPerPack][packLength]   groupsPerPack = laneLength / groupLength
 *   fp16   mins  [groupsPerPack][packLength]
 * </pre>
 *
 * @param bits        code width
 * @param laneLength  length of the lane axis (keys: G tokens; values: D channels)
 * @param packLength  length of the pack axis (keys: D channels; values: G tokens)
 * @param groupLength elements per quantization group along the lane axis (divides laneLength)
 */
public record PackedLayout(BitWidth bits, int laneLength, int packLength, int groupLength) {

    public PackedLayout {
        if (laneLength <= 0 || packLength <= 0 || groupLength <= 0 || laneLength % groupLength != 0) {
            throw new IllegalArgumentException("bad packed layout: lanes=" + laneLength + " pack=" + packLength
                    + " group=" + groupLength + " (group must divide lanes)");
        }
    }

    /** Keys of one head of a block: lanes = G tokens, pack = D channels, one group per channel. */
    public static PackedLayout keys(BitWidth bits, int groupSize, int headDim) {
        return new PackedLayout(bits, groupSize, headDim, groupSize);
    }

    /** Values of one head of a block: lanes = D channels, pack = G tokens, groups of min(G, D) channels. */
    public static PackedLayout values(BitWidth bits, int groupSize, int headDim) {
        return new PackedLayout(bits, headDim, groupSize, valueGroupLength(groupSize, headDim));
    }

    /** Channels per value group: G, or the whole head when G is larger than the head. */
    public static int valueGroupLength(int groupSize, int headDim) {
        return Math.min(groupSize, headDim);
    }

    public int runs() {
        return BitWidth.runs(packLength);
    }

    public int groupsPerPack() {
        return laneLength / groupLength;
    }

    public int codeWords() {
        return runs() * bits.wordsPerRun() * laneLength;
    }

    public long codeBytes() {
        return 4L * codeWords();
    }

    /** Number of (scale, min) pairs. */
    public int metaCount() {
        return packLength * groupsPerPack();
    }

    public long metaBytes() {
        return 4L * metaCount();
    }

    public long bytes() {
        return codeBytes() + metaBytes();
    }

    /** Byte offset of word (run, k, lane), k in 0..bits-1. */
    public long wordOffset(int run, int k, int lane) {
        return 4L * (((long) run * bits.wordsPerRun() + k) * laneLength + lane);
    }

    /** Byte offset of the fp16 scale of group {@code group} of pack element {@code pack}; contiguous along pack. */
    public long scaleOffset(int pack, int group) {
        return codeBytes() + 2L * ((long) group * packLength + pack);
    }

    /** Byte offset of the fp16 min of group {@code group} of pack element {@code pack}; contiguous along pack. */
    public long minOffset(int pack, int group) {
        return codeBytes() + 2L * metaCount() + 2L * ((long) group * packLength + pack);
    }
}
