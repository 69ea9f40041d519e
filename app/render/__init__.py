"""Rendering Dify's Markdown: the platform-neutral parser, healing of half-streamed text and
splitting at limits; each platform brings its Dialect.
"""
