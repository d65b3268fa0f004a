"""The two classes, benign and malignant: their names and the number each is as a label.

Every module that names a class, or turns a name into a label, takes it from here. Malignant
is the positive class (1): a probability is the malignant one.
"""

BENIGN, MALIGNANT = "benign", "malignant"
# In label order: CLASS_NAMES[label] is the name of a label.
CLASS_NAMES = (BENIGN, MALIGNANT)
LABEL_VALUES = {name: label for label, name in enumerate(CLASS_NAMES)}
