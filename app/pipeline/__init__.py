"""The pipeline and its model: one platform-neutral message in, one streamed answer out (routing,
preflight, the answer run, human-in-the-loop forms, the edit scheduler).
"""
