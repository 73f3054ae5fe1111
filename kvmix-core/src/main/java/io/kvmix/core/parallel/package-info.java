/** The worker threads every CPU kernel runs on. */
package io.kvmix.core.parallel;
