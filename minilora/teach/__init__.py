"""The course kit: exercise checkers for the notebooks, golden vectors for graders in any
framework, the student package and its grader.

Stands on everything below the command line.
"""
