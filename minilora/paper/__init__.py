"""The paper's experiments at toy scale: baselines, counts, the experiment harness, the
tables (1, 4, 5, 6), latency, and section 7's analyses of the learned updates.

Stands on the core, work/ and interop/.
"""
