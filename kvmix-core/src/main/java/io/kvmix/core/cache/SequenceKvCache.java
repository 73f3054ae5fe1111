package io.kvmix.core.cache;

import io.kvmix.core.plan.QuantPlan;

import java.util.ArrayList;
import java.util.List;

/**
 * All layers' caches of one sequence: what an inference loop holds per request.
 *
 * <pre>{@code
 * try (SequenceKvCache cache = SequenceKvCache.create(shape, plan)) {   // plan null = fp16
 *     LayerKvCache layer = cache.layer(l);
 *     layer.append(k, 0, v, 0, tokens);                                // [tokens][kvHeads * headDim]
 *     FusedAttention.vector().attend(layer, q, 0, tokens, shape.queryHeads(), shape.attentionScale(), out, 0);
 * }
 * }</pre>
 */
public final class SequenceKvCache implements AutoCloseable {
    private final ModelKvShape shape;
    private final QuantPlan plan;
    private final List<LayerKvCache> layers;

    private SequenceKvCache(ModelKvShape shape, QuantPlan plan, List<LayerKvCache> layers) {
        this.shape = shape;
        this.plan = plan;
        this.layers = List.copyOf(layers);
    }

    /**
     * Builds one cache per layer: fp16 when {@code plan} is null, else the plan's layer settings.
     *
     * @throws io.kvmix.core.plan.PlanValidationException if the plan does not fit the model (every problem listed)
     */
    public static SequenceKvCache create(ModelKvShape shape, QuantPlan plan) {
        return create(shape, plan, FpPrecision.FP16);
    }

    /**
     * As {@link #create(ModelKvShape, QuantPlan)}; without a plan the tokens are kept in {@code precision}
     * (fp32 is an explicit option for checks against fp32 references; a plan's FP buffers are always fp16).
     */
    public static SequenceKvCache create(ModelKvShape shape, QuantPlan plan, FpPrecision precision) {
        if (plan != null && precision != FpPrecision.FP16) {
            throw new IllegalArgumentException("a KVmix plan keeps its FP buffers in fp16; " + precision + " is only for a full-precision cache");
        }
        if (plan != null) {
            plan.validate(shape.layers(), shape.headDim());
        }
        List<LayerKvCache> caches = new ArrayList<>(shape.layers());
        try {
            for (int l = 0; l < shape.layers(); l++) {
                caches.add(plan == null ? LayerKvCache.fullPrecision(shape.layerGeometry(), l, precision)
                        : LayerKvCache.quantized(shape.layerGeometry(), l, plan.layer(l), plan.groupSize()));
            }
        } catch (RuntimeException e) {
            caches.forEach(LayerKvCache::close);
            throw e;
        }
        return new SequenceKvCache(shape, plan, caches);
    }

    public ModelKvShape shape() {
        return shape;
    }

    /** The plan, or null for an fp16 cache. */
    public QuantPlan plan() {
        return plan;
    }

    public LayerKvCache layer(int index) {
        return layers.get(index);
    }

    public int layerCount() {
        return layers.size();
    }

    /** Tokens in the sequence (layer 0's count; every layer sees the same appends). */
    public int length() {
        return layers.get(0).length();
    }

    /** Exact live bytes over all layers. */
    public KvBytes bytes() {
        KvBytes total = KvBytes.ZERO;
        for (LayerKvCache layer : layers) {
            total = total.plus(layer.bytes());
        }
        return total;
    }

    @Override
    public void close() {
        layers.forEach(LayerKvCache::close);
    }
}
