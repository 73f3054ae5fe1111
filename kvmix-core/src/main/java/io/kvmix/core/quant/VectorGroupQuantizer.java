package io.kvmix.core.quant;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import java.util.Arrays;

import static io.kvmix.core.quant.Fp16Vectors.F;
import static io.kvmix.core.quant.Fp16Vectors.I;
import static io.kvmix.core.quant.Fp16Vectors.LANES;

/**
 * Vector API quantizer, bit-identical to {@link ScalarGroupQuantizer}.
 *
 * <p>The input is first brought into a lane-contiguous fp32 tile {@code x[pack][lane]} (for keys this is
 * the transpose of the token rows), so that min/max, codes and word packing all run along lanes for
 * both streams. Min/max, subtract, divide and add are single IEEE operations, and truncation equals
 * floor because {@code (x - min) / scale + 0.5 >= 0}; the fp16 rounding of each scale is the shared
 * scalar {@link GroupMath#scale16}.
 */
public final class VectorGroupQuantizer implements GroupQuantizer {
    public static final VectorGroupQuantizer INSTANCE = new VectorGroupQuantizer();

    private static final ThreadLocal<Tile> TILES = ThreadLocal.withInitial(Tile::new);

    private VectorGroupQuantizer() {
    }

    /** Per-thread scratch: fp32 input and int codes, both {@code [pack][lane]}. */
    private static final class Tile {
        float[] x = new float[0];
        int[] codes = new int[0];

        void ensure(int elements) {
            if (x.length < elements) {
                x = new float[elements];
                codes = new int[elements];
            }
        }
    }

    @Override
    public void quantize(MemorySegment src, long srcOffset, int laneStride, int packStride, PackedLayout layout,
                         MemorySegment dst, long dstOffset, MatrixOrigin origin) {
        int lanes = layout.laneLength();
        int packs = layout.packLength();
        Tile tile = TILES.get();
        tile.ensure(lanes * packs);
        if (!loadTile(src, srcOffset, laneStride, packStride, lanes, packs, tile.x)) {
            // Let the reference find and name the first non-finite element, in its order.
            ScalarGroupQuantizer.INSTANCE.quantize(src, srcOffset, laneStride, packStride, layout, dst, dstOffset, origin);
            throw new IllegalStateException("non-finite input not reported by the reference quantizer");
        }
        computeCodes(layout, tile, dst, dstOffset, origin);
        packWords(layout, tile.codes, dst, dstOffset);
    }

    /** Fills {@code x[pack * lanes + lane]}; returns false if any element is non-finite. */
    private static boolean loadTile(MemorySegment src, long srcOffset, int laneStride, int packStride,
                                    int lanes, int packs, float[] x) {
        boolean finite = true;
        if (laneStride == 1) {
            int vectorLanes = lanes - lanes % LANES;
            for (int pack = 0; pack < packs; pack++) {
                long rowOffset = srcOffset + 2L * pack * packStride;
                int base = pack * lanes;
                int lane = 0;
                for (; lane < vectorLanes; lane += LANES) {
                    FloatVector v = Fp16Vectors.load(src, rowOffset + 2L * lane);
                    v.intoArray(x, base + lane);
                }
                for (; lane < lanes; lane++) {
                    x[base + lane] = Fp16.get(src, rowOffset + 2L * lane);
                }
            }
            // The vector load maps inf/NaN to finite values: check the raw exponents instead.
            for (int pack = 0; pack < packs && finite; pack++) {
                finite = allFinite(src, srcOffset + 2L * pack * packStride, lanes);
            }
        } else {
            for (int lane = 0; lane < lanes; lane++) {
                for (int pack = 0; pack < packs; pack++) {
                    float v = Fp16.get(src, srcOffset + 2L * ((long) lane * laneStride + (long) pack * packStride));
                    finite &= Float.isFinite(v);
                    x[pack * lanes + lane] = v;
                }
            }
        }
        return finite;
    }

    /** True when none of {@code count} contiguous fp16 values at {@code offset} has an all-ones exponent. */
    private static boolean allFinite(MemorySegment src, long offset, int count) {
        for (int i = 0; i < count; i++) {
            if ((src.get(Fp16.LAYOUT, offset + 2L * i) & 0x7c00) == 0x7c00) {
                return false;
            }
        }
        return true;
    }

    private static void computeCodes(PackedLayout layout, Tile tile, MemorySegment dst, long dstOffset,
                                     MatrixOrigin origin) {
        int lanes = layout.laneLength();
        int groupLength = layout.groupLength();
        int maxCode = layout.bits().maxCode();
        float[] x = tile.x;
        int[] codes = tile.codes;
        IntVector zero = IntVector.zero(I);
        IntVector top = IntVector.broadcast(I, maxCode);
        for (int pack = 0; pack < layout.packLength(); pack++) {
            for (int group = 0; group < layout.groupsPerPack(); group++) {
                int from = pack * lanes + group * groupLength;
                int to = from + groupLength;
                int vectorEnd = from + (groupLength - groupLength % LANES);
                float min = Float.POSITIVE_INFINITY;
                float max = Float.NEGATIVE_INFINITY;
                int i = from;
                if (vectorEnd > from) {
                    FloatVector vmin = FloatVector.fromArray(F, x, i);
                    FloatVector vmax = vmin;
                    for (i += LANES; i < vectorEnd; i += LANES) {
                        FloatVector v = FloatVector.fromArray(F, x, i);
                        vmin = vmin.min(v);
                        vmax = vmax.max(v);
                    }
                    min = vmin.reduceLanes(VectorOperators.MIN);
                    max = vmax.reduceLanes(VectorOperators.MAX);
                }
                for (; i < to; i++) {
                    min = Math.min(min, x[i]);
                    max = Math.max(max, x[i]);
                }
                float scale16 = GroupMath.scale16(min, max, maxCode, origin, group * groupLength, groupLength, pack);
                Fp16.set(dst, dstOffset + layout.scaleOffset(pack, group), scale16);
                Fp16.set(dst, dstOffset + layout.minOffset(pack, group), min);
                if (scale16 == 0f) {
                    Arrays.fill(codes, from, to, 0);
                    continue;
                }
                FloatVector vmin = FloatVector.broadcast(F, min);
                FloatVector vscale = FloatVector.broadcast(F, scale16);
                FloatVector half = FloatVector.broadcast(F, 0.5f);
                for (i = from; i < vectorEnd; i += LANES) {
                    FloatVector y = FloatVector.fromArray(F, x, i).sub(vmin).div(vscale).add(half);
                    IntVector q = (IntVector) y.convert(VectorOperators.F2I, 0);
                    q.max(zero).min(top).intoArray(codes, i);
                }
                for (; i < to; i++) {
                    codes[i] = GroupMath.code(x[i], min, scale16, maxCode);
                }
            }
        }
    }

    /** Builds every code word from {@code codes[pack][lane]}, a vector of lanes at a time. */
    private static void packWords(PackedLayout layout, int[] codes, MemorySegment dst, long dstOffset) {
        int lanes = layout.laneLength();
        int packs = layout.packLength();
        int vectorLanes = lanes - lanes % LANES;
        for (int run = 0; run < layout.runs(); run++) {
            int runStart = run * BitWidth.RUN;
            for (BitWidth.Plane plane : layout.bits().planes()) {
                int perWord = plane.codesPerWord();
                for (int sub = 0; sub < plane.wordsPerRun(); sub++) {
                    int firstPack = runStart + sub * perWord;
                    int count = Math.max(0, Math.min(perWord, packs - firstPack));
                    int k = plane.firstWord() + sub;
                    int lane = 0;
                    for (; lane < vectorLanes; lane += LANES) {
                        IntVector word = IntVector.zero(I);
                        for (int j = 0; j < count; j++) {
                            IntVector code = IntVector.fromArray(I, codes, (firstPack + j) * lanes + lane);
                            word = word.or(code.lanewise(VectorOperators.LSHR, plane.shift()).and(plane.mask())
                                    .lanewise(VectorOperators.LSHL, plane.width() * j));
                        }
                        word.intoMemorySegment(dst, dstOffset + layout.wordOffset(run, k, lane), ByteOrder.LITTLE_ENDIAN);
                    }
                    for (; lane < lanes; lane++) {
                        int word = 0;
                        for (int j = 0; j < count; j++) {
                            int code = codes[(firstPack + j) * lanes + lane];
                            word |= ((code >>> plane.shift()) & plane.mask()) << (plane.width() * j);
                        }
                        dst.set(Fp16.WORD, dstOffset + layout.wordOffset(run, k, lane), word);
                    }
                }
            }
        }
    }
}
