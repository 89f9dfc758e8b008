"""The Big Five trait names, in the order every table and head uses."""

TRAITS = ("extraversion", "agreeableness", "conscientiousness", "neuroticism", "openness")
