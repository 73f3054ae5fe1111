package io.kvmix.core.quant;

import java.lang.foreign.MemorySegment;

/** Reference quantizer: FORMAT.md read literally, one element at a time. */
public final class ScalarGroupQuantizer implements GroupQuantizer {
    public static final ScalarGroupQuantizer INSTANCE = new ScalarGroupQuantizer();

    private ScalarGroupQuantizer() {
    }

    @Override
    public void quantize(MemorySegment src, long srcOffset, int laneStride, int packStride, PackedLayout layout,
                         MemorySegment dst, long dstOffset, MatrixOrigin origin) {
        BitWidth bits = layout.bits();
        int maxCode = bits.maxCode();
        int groupLength = layout.groupLength();
        dst.asSlice(dstOffset, layout.codeBytes()).fill((byte) 0);
        for (int pack = 0; pack < layout.packLength(); pack++) {
            for (int group = 0; group < layout.groupsPerPack(); group++) {
                int firstLane = group * groupLength;
                float min = Float.POSITIVE_INFINITY;
                float max = Float.NEGATIVE_INFINITY;
                for (int lane = firstLane; lane < firstLane + groupLength; lane++) {
                    float x = Fp16.get(src, srcOffset + 2L * ((long) lane * laneStride + (long) pack * packStride));
                    if (!Float.isFinite(x)) {
                        throw GroupMath.nonFinite(x, origin, lane, pack);
                    }
                    min = Math.min(min, x);
                    max = Math.max(max, x);
                }
                float scale16 = GroupMath.scale16(min, max, maxCode, origin, firstLane, groupLength, pack);
                Fp16.set(dst, dstOffset + layout.scaleOffset(pack, group), scale16);
                Fp16.set(dst, dstOffset + layout.minOffset(pack, group), min);
                for (int lane = firstLane; lane < firstLane + groupLength; lane++) {
                    float x = Fp16.get(src, srcOffset + 2L * ((long) lane * laneStride + (long) pack * packStride));
                    putCode(dst, dstOffset, layout, lane, pack, GroupMath.code(x, min, scale16, maxCode));
                }
            }
        }
    }

    /** ORs {@code code} into its plane words (the words must start zeroed). */
    static void putCode(MemorySegment dst, long dstOffset, PackedLayout layout, int lane, int pack, int code) {
        int run = pack / BitWidth.RUN;
        int inRun = pack % BitWidth.RUN;
        for (BitWidth.Plane plane : layout.bits().planes()) {
            long at = dstOffset + layout.wordOffset(run, plane.wordOf(inRun), lane);
            int word = dst.get(Fp16.WORD, at);
            dst.set(Fp16.WORD, at, word | (((code >>> plane.shift()) & plane.mask()) << plane.bitOf(inRun)));
        }
    }

    /** Reads code (lane, pack) back from packed words. */
    public static int getCode(MemorySegment src, long srcOffset, PackedLayout layout, int lane, int pack) {
        int run = pack / BitWidth.RUN;
        int inRun = pack % BitWidth.RUN;
        int code = 0;
        for (BitWidth.Plane plane : layout.bits().planes()) {
            int word = src.get(Fp16.WORD, srcOffset + layout.wordOffset(run, plane.wordOf(inRun), lane));
            code |= ((word >>> plane.bitOf(inRun)) & plane.mask()) << plane.shift();
        }
        return code;
    }

    /** Decoded value of element (lane, pack): {@code code * scale + min}. */
    public static float dequantize(MemorySegment src, long srcOffset, PackedLayout layout, int lane, int pack) {
        int group = lane / layout.groupLength();
        float scale = Fp16.get(src, srcOffset + layout.scaleOffset(pack, group));
        float min = Fp16.get(src, srcOffset + layout.minOffset(pack, group));
        return getCode(src, srcOffset, layout, lane, pack) * scale + min;
    }
}
